"""OpenVINO's own goal harnesses: its CPU plugin on a lower instruction set (``isa``)."""
