"""ONNX Runtime's own goal harnesses: its int8 kernels on CPUs this machine is not, by
emulation (``emulated``: another x86 CPU under qemu-x86_64; ``arm_guest``, ``emulated_arm``
and ``int8_arm``: ARM cores under qemu-aarch64)."""
