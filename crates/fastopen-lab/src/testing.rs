//! Test support (feature `testing`, for this workspace's tests): how a test
//! that needs root behaves without it.

/// For tests that need root: `true` if they can run. Without root, outside CI
/// they are skipped with a message; under `CI=true` this panics, because CI
/// runs as root and a skipped test there would hide a failure.
pub fn root_or_skip(test: &str) -> bool {
    if crate::netns::is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| v == "true" || v == "1") {
        panic!("{test} needs root, and CI=true: CI runs as root, so this must not be skipped");
    }
    eprintln!("SKIPPED {test}: needs root (network namespaces); run the tests with sudo");
    false
}
