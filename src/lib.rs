//! cleanroom: preserve a compromised EC2 instance as court-ready evidence.
