"""nsg-lab: network-namespace topologies for the demo, the tests and the benchmarks."""
