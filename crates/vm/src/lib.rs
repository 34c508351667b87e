//! QEMU/KVM guests as cluster resources: command lines, accelerator choice, lifecycle and live migration over QMP.
