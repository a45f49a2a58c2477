//! `inspect memory` (issue #23): it sizes CALM's full-scale fine-tuning on a machine without
//! its weights (the shipped architectures), counts the parameters the models really have, and
//! each setting moves the part it should.

use std::process::Command;

fn estimate(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_inspect"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("memory")
        .args(args)
        .arg("--json")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn bytes(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

const VICUNA: [&str; 4] = [
    "--job",
    "finetune",
    "--config",
    "configs/finetune/calm_vicuna7b.yaml",
];

#[test]
fn calm_at_full_scale_is_sized_from_the_shipped_architectures() {
    let e = estimate(&[&VICUNA[..], &["--ranks", "8", "--device-memory", "80GB"]].concat());
    // Vicuna-7B's published count, trained in full, plus the MFAM; CLIP ViT-L/14 frozen.
    let trained = bytes(&e, "trained_parameters");
    assert!(
        trained > 6_738_415_616 && trained < 6_738_415_616 + 500_000_000,
        "{trained}"
    );
    let frozen = bytes(&e, "frozen_parameters");
    assert!((300_000_000..310_000_000).contains(&frozen), "{frozen}");
    let parts: u64 = [
        "frozen_weights_bytes",
        "trained_weights_bytes",
        "gradients_bytes",
        "optimizer_state_bytes",
        "activations_bytes",
        "overhead_bytes",
    ]
    .iter()
    .map(|k| bytes(&e, k))
    .sum();
    assert_eq!(bytes(&e, "step_bytes"), parts);
    // At a checkpoint the optimizer state is there twice, the gradients and activations gone.
    assert_eq!(
        bytes(&e, "checkpoint_write_bytes"),
        bytes(&e, "frozen_weights_bytes")
            + bytes(&e, "trained_weights_bytes")
            + 2 * bytes(&e, "optimizer_state_bytes")
            + bytes(&e, "overhead_bytes")
    );
    let peak = parts.max(bytes(&e, "checkpoint_write_bytes"));
    assert_eq!(bytes(&e, "per_device_bytes"), peak);
    assert_eq!(bytes(&e, "device_memory_bytes"), 80_000_000_000);
    assert_eq!(e["fits"], serde_json::json!(peak <= 80_000_000_000));
    // The committed setting is one that fits (issue #23).
    assert_eq!(e["fits"], serde_json::json!(true), "{e}");
    assert!(
        e["read"].to_string().contains("vicuna-7b-v1.5"),
        "{}",
        e["read"]
    );
}

#[test]
fn sharding_checkpointing_and_bf16_each_shrink_their_part() {
    // Vicuna-7B on 8 ranks, 8 micro-batches of 2 x 2048 tokens each per step, with none of the
    // memory settings the committed config turns on.
    let plain = [
        "--ranks",
        "8",
        "--set",
        "distributed.zero=none",
        "--set",
        "train.activation_checkpointing=false",
    ];
    let with = |extra: &[&str]| estimate(&[&VICUNA[..], &plain[..], extra].concat());
    let base = with(&[]);
    let zero1 = with(&["--set", "distributed.zero=optimizer_state"]);
    assert_eq!(
        bytes(&zero1, "optimizer_state_bytes"),
        bytes(&base, "optimizer_state_bytes") / 8
    );
    assert_eq!(
        bytes(&zero1, "activations_bytes"),
        bytes(&base, "activations_bytes")
    );
    // Stage 2 keeps one micro-batch's whole gradient and an eighth of the running sum, where
    // stage 1 keeps partial sums of the rank's 8 micro-batches (at most 4 whole gradients).
    let zero2 = with(&["--set", "distributed.zero=gradients"]);
    let whole = bytes(&base, "trained_weights_bytes");
    assert_eq!(bytes(&zero1, "gradients_bytes"), 4 * whole);
    assert_eq!(bytes(&zero2, "gradients_bytes"), whole + whole / 8);
    assert_eq!(
        bytes(&zero2, "optimizer_state_bytes"),
        bytes(&zero1, "optimizer_state_bytes")
    );
    let ckpt = with(&["--set", "train.activation_checkpointing=true"]);
    assert!(bytes(&ckpt, "activations_bytes") * 10 < bytes(&base, "activations_bytes"));
    // bf16 halves the saved matrix-product inputs and adds a bf16 copy of each weight used.
    let bf16 = with(&["--set", "train.precision=bf16"]);
    assert!(bytes(&bf16, "activations_bytes") < bytes(&base, "activations_bytes"));
    assert_eq!(
        bytes(&bf16, "trained_weights_bytes"),
        bytes(&base, "trained_weights_bytes")
    );
}

#[test]
fn ranks_that_do_not_divide_the_accumulation_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_inspect"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["memory", "--ranks", "3"])
        .args(VICUNA)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ranks 3 does not divide"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
