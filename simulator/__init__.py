"""Plant simulator: device servers with scripted machines, and a simulated central ticket
system. Used by the demo, the tests and the benchmarks."""
