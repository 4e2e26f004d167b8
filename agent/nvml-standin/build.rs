//! Compiles `standin.c` into `libnvidia-ml-standin.so` and tells the crate where it is.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=standin.c");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let lib = out.join("libnvidia-ml-standin.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(&cc)
        .args([
            "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
        ])
        .arg(&lib)
        .arg("standin.c")
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e}"));
    assert!(status.success(), "compiling standin.c failed");
    println!("cargo:rustc-env=NVML_STANDIN_LIBRARY={}", lib.display());
}
