//! vfio tests. All run without root against a sysfs tree the test builds
//! ([`fake::FakeSysfs`]), with a recording fake kernel.
//!
//! There is no privileged "real sysfs" test: binding needs an IOMMU, which
//! the build host does not have (and rebinding the host's own devices is not
//! something a test may do). The real kernel path is exercised by the QEMU
//! scenario in qemu-tests/tests/vfio.rs (q35 + intel-iommu, two e1000e NICs).

mod apply_tests;
mod fake;
mod plan_tests;
mod select_tests;
