//! The nested-QEMU harness for walden's image (DESIGN.md section 6, level 3).
