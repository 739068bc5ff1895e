//! polymq binary entry point.
fn main() {}
