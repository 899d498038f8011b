"""Layer 1: pure ``@njit`` loops on arrays. Outputs and gradient buffers come first, then inputs;
backward kernels accumulate with ``+=``. No classes, no validation: that is the layers' job."""
