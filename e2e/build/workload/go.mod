// The test workload that runs on the real node: one static binary with the
// behaviours the real-node tests need. Standard library only.
module sre.space/e2e/build/workload

go 1.26.0
