//! The commit–challenge–open–verify flow through the real binary, each step its own process:
//! an honest opening passes in segment mode; a flipped byte, an opening of an earlier run and
//! an opening checked against another request are each refused, naming what failed.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn run(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verillm-tui"))
        .args(args)
        .env_remove("VERILLM_CONFIG_DIR")
        .env("RAYON_NUM_THREADS", "1")
        .env("VERILLM_DATA_DIR", data)
        .output()
        .expect("spawn verillm-tui")
}

fn ok(args: &[&str], data: &Path) -> Output {
    let out = run(args, data);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn refused(args: &[&str], data: &Path) -> String {
    let out = run(args, data);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn an_opening_is_verified_in_segment_mode_and_tampering_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    ok(
        &[
            "request",
            "--prompt",
            "Name a color.",
            "--max-tokens",
            "8",
            "--out",
            &p("req.json"),
        ],
        d,
    );
    ok(
        &[
            "request",
            "--prompt",
            "Name a color.",
            "--max-tokens",
            "8",
            "--out",
            &p("other.json"),
        ],
        d,
    );
    ok(
        &["infer", "--request", &p("req.json"), "--out", &p("bundle")],
        d,
    );
    ok(
        &[
            "infer",
            "--request",
            &p("other.json"),
            "--out",
            &p("earlier"),
        ],
        d,
    );
    std::fs::write(d.join("secret"), b"a verifier's own secret bytes").unwrap();
    let challenge = ok(
        &[
            "challenge",
            &p("bundle"),
            "--secret-file",
            &p("secret"),
            "--layers",
            "2",
            "--out",
            &p("ch.json"),
        ],
        d,
    );
    let said = String::from_utf8_lossy(&challenge.stdout).to_string();
    assert!(
        said.contains(&hex(b"a verifier's own secret bytes")),
        "{said}"
    );
    ok(
        &[
            "open",
            &p("bundle"),
            "--challenge",
            &p("ch.json"),
            "--out",
            &p("opening"),
        ],
        d,
    );

    let out = ok(
        &[
            "verify",
            &p("bundle"),
            "--request",
            &p("req.json"),
            "--opening",
            &p("opening"),
            "--json",
        ],
        d,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "PASS", "{v}");
    assert_eq!(v["mode"], "segment");
    assert_eq!(v["challenged_layers"].as_array().unwrap().len(), 2);
    assert!(v["proofs_checked"].as_u64().unwrap() > 0);
    for s in v["segments"].as_array().unwrap() {
        assert_eq!(s["accepted"], s["checks"], "{v}");
    }

    // The secret was revealed for this bundle's root: reused for another root it is refused
    // (the inferencer could grind that root against it), the same root again is the same draw.
    let err = refused(
        &[
            "challenge",
            &p("earlier"),
            "--secret-file",
            &p("secret"),
            "--layers",
            "2",
            "--out",
            &p("ch0.json"),
        ],
        d,
    );
    assert!(
        err.contains("already revealed") && err.contains("secret.revealed"),
        "{err}"
    );
    assert!(!d.join("ch0.json").exists());
    ok(
        &[
            "challenge",
            &p("bundle"),
            "--secret-file",
            &p("secret"),
            "--layers",
            "2",
            "--out",
            &p("ch-again.json"),
        ],
        d,
    );
    assert_eq!(
        std::fs::read(d.join("ch.json")).unwrap(),
        std::fs::read(d.join("ch-again.json")).unwrap()
    );
    // Without --secret-file a fresh secret is drawn each time.
    let fresh = |out: &str| {
        ok(
            &[
                "challenge",
                &p("earlier"),
                "--layers",
                "2",
                "--out",
                &p(out),
            ],
            d,
        );
        let v: Value = serde_json::from_slice(&std::fs::read(d.join(out)).unwrap()).unwrap();
        v["secret"].as_str().unwrap().to_string()
    };
    let (first, second) = (fresh("ch0.json"), fresh("ch1.json"));
    assert!(first.len() == 64 && first != second, "{first} {second}");

    // An earlier run (the same prompt asked with another nonce): its opening does not fit this
    // bundle's root.
    ok(
        &[
            "open",
            &p("earlier"),
            "--challenge",
            &p("ch0.json"),
            "--out",
            &p("opening0"),
        ],
        d,
    );
    let err = refused(
        &[
            "verify",
            &p("bundle"),
            "--request",
            &p("req.json"),
            "--opening",
            &p("opening0"),
        ],
        d,
    );
    assert!(err.contains("another run or request"), "{err}");

    // Another request (another nonce): the bundle does not answer it.
    let out = run(
        &[
            "verify",
            &p("bundle"),
            "--request",
            &p("other.json"),
            "--opening",
            &p("opening"),
        ],
        d,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("REJECT"));

    // A flipped byte in an opened state, its checksum fixed: the proof refuses it.
    let json_path = d.join("opening").join("opening.json");
    let mut file: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let name = file["columns"][1]["data"].as_str().unwrap().to_string();
    let column = file["columns"][1]["column"].as_u64().unwrap();
    let data_path = d.join("opening").join(&name);
    let mut bytes = std::fs::read(&data_path).unwrap();
    bytes[100] ^= 0x10;
    std::fs::write(&data_path, &bytes).unwrap();
    use sha2::Digest;
    file["columns"][1]["data_sha256"] = Value::String(hex(&sha2::Sha256::digest(&bytes)));
    std::fs::write(&json_path, serde_json::to_vec(&file).unwrap()).unwrap();
    let err = refused(
        &[
            "verify",
            &p("bundle"),
            "--request",
            &p("req.json"),
            "--opening",
            &p("opening"),
        ],
        d,
    );
    assert!(
        err.contains(&format!("column {column} position 0")) && err.contains("committed root"),
        "{err}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
