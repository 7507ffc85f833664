//! The hand-off report: a real acquisition in the lab with hostile values in the
//! suspect's account, printed by a real headless browser and re-verified with the
//! commands it prints; clean-room findings in a case on the in-memory store.

mod browser;
mod clean_room;
mod lab;
