//! Image references: parsing never panics, and what parses prints back to a reference that
//! parses to the same thing, and names a file without a path separator.
#![no_main]

use docker_pull::platform::Platform;
use docker_pull::reference::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(reference) = Reference::parse(s, "docker.io") else {
        return;
    };
    let shown = reference.to_string();
    let again = Reference::parse(&shown, "docker.io")
        .unwrap_or_else(|e| panic!("{s:?} parsed, but its display {shown:?} does not: {e}"));
    assert_eq!(again, reference, "{s:?} -> {shown:?} does not round-trip");
    let _ = reference.familiar_name();
    let _ = reference.familiar_tagged();
    let _ = reference.manifest_reference();
    for platform in [
        Platform::new("linux", "amd64", None),
        Platform::new("linux", "arm", Some("v7")),
    ] {
        let name = reference.archive_file_name(&platform);
        assert!(
            !name.contains('/') && !name.contains('\0') && !name.starts_with('.'),
            "{s:?}: archive file name {name:?}"
        );
    }
});
