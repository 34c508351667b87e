//! quorate: one binary for every node service and admin command of the cluster.
fn main() {}
