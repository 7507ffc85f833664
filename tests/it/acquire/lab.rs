//! Lab tests of acquire (the binary end to end) are added with the lab scenario.
