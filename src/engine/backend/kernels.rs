//! The kernel sources embedded in the binary and the simulator's entry points, generated at
//! build time from `kernels/*.cu`. (Placeholder until the build script lands.)
