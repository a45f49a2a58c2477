//! BERT against HF `transformers`' `BertModel` on a tiny random checkpoint with padding and
//! token types (fixture from scripts/fixtures/make_qformer_fixtures.py), and the real
//! all-MiniLM-L6-v2 weights (fetched by scripts/fetch_models.sh): its tokenizer's ids and its
//! sentence embeddings equal the reference's, and it ranks related sentences together.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use calm::io::checkpoint::Tensors;
use calm::io::hf::{load_bert, load_text_encoder, read_bert_config};
use calm::io::models::{FetchedModel, model_dir};

fn case() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert/a_padding")
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).abs().max().into_scalar::<f32>()
}

fn ids(rows: [[i64; 7]; 2], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(rows.concat(), [2, 7]), device)
}

const INPUT_IDS: [[i64; 7]; 2] = [[2, 45, 17, 88, 9, 61, 3], [2, 70, 12, 3, 0, 0, 0]];
const TOKEN_TYPES: [[i64; 7]; 2] = [[0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0, 0]];

fn check(dir: &Path, full: bool) -> f32 {
    let device = Device::flex();
    let (model, _) = load_bert(dir, &device).expect("loads");
    let mask = Tensor::<2>::from_data(
        TensorData::new([[1f32; 7], [1., 1., 1., 1., 0., 0., 0.]].concat(), [2, 7]),
        &device,
    );
    let (out, expected) = if full {
        (
            model.forward(
                ids(INPUT_IDS, &device),
                Some(mask),
                Some(ids(TOKEN_TYPES, &device)),
            ),
            "outputs.safetensors",
        )
    } else {
        (
            model.forward(ids(INPUT_IDS, &device), None, None),
            "outputs_ids_only.safetensors",
        )
    };
    let expected = Tensors::read(&case().join(expected)).expect("reference");
    let e: Tensor<3> = expected.tensor("last_hidden_state", &device).expect("h");
    let p: Tensor<2> = expected.tensor("pooler_output", &device).expect("p");
    max_abs_diff(out.last_hidden_state, e).max(max_abs_diff(out.pooler_output.expect("pooler"), p))
}

#[test]
fn padding_and_token_types_match_the_reference() {
    for full in [true, false] {
        let err = check(&case(), full);
        eprintln!("bert a_padding (mask and types: {full}): max abs error {err:e}");
        assert!(err <= 1e-4, "{err}");
    }
    let config = read_bert_config(&case()).expect("config");
    assert_eq!(config.max_position_embeddings, 16);
}

#[test]
fn a_head_model_checkpoint_loads_its_bert_and_reports_the_head() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut tensors = Tensors::read(&case().join("model.safetensors"))
        .expect("read")
        .rename(|k| format!("bert.{k}"));
    tensors
        .insert(
            "cls.predictions.bias",
            Tensor::<1>::zeros([99], &Device::flex()),
        )
        .expect("insert");
    tensors
        .write(&tmp.path().join("model.safetensors"))
        .expect("write");
    std::fs::copy(case().join("config.json"), tmp.path().join("config.json")).expect("copy");
    let (_, report) = load_bert(tmp.path(), &Device::flex()).expect("loads");
    assert_eq!(report.unexpected, ["cls.predictions.bias"]);
    assert!(check(tmp.path(), true) <= 1e-4);
}

#[derive(serde::Deserialize)]
struct Reference {
    sentences: Vec<String>,
    input_ids: Vec<Vec<i64>>,
    attention_mask: Vec<Vec<i64>>,
    embeddings: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert/minilm_sentences.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

#[test]
fn minilm_sentence_embeddings_match_the_reference_and_rank_related_sentences_first() {
    let dir = model_dir(FetchedModel::Minilm).unwrap_or_else(|e| panic!("{e}"));
    let (encoder, report) = load_text_encoder(&dir, &Device::flex()).expect("loads");
    // 104 entries; `embeddings.position_ids` is an integer buffer, not a weight.
    assert_eq!(report.applied.len(), 103, "{:?}", report.unexpected);
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    assert_eq!(encoder.hidden_size(), 384);

    let r = reference();
    let sentences: Vec<&str> = r.sentences.iter().map(String::as_str).collect();
    assert!(sentences.len() >= 3);
    let tokens = encoder.tokenize(&sentences).expect("tokenizes");
    assert_eq!(
        tokens.input_ids,
        r.input_ids.concat(),
        "same ids as the reference tokenizer"
    );
    assert_eq!(tokens.attention_mask, r.attention_mask.concat());

    let emb = encoder.embed(&sentences, false).expect("embeds");
    let n = sentences.len();
    assert_eq!(emb.dims(), [n, 384]);
    let expected = Tensor::<2>::from_data(
        TensorData::new(r.embeddings.concat(), [n, 384]),
        &Device::flex(),
    );
    let err = max_abs_diff(emb.clone(), expected);
    eprintln!("MiniLM sentence embeddings: max abs error {err:e}");
    assert!(err <= 1e-4, "{err}");

    // Unit length, and the two sentences about a dark, dull photo are nearer each other than
    // either is to the train timetable.
    let norms = emb.clone().powf_scalar(2.0).sum_dim(1).sqrt();
    assert!(max_abs_diff(norms, Tensor::ones([n, 1], &Device::flex())) < 1e-5);
    let sim = emb.clone().matmul(emb.clone().transpose());
    let s = |i: usize, j: usize| sim.clone().slice([i..i + 1, j..j + 1]).into_scalar::<f32>();
    eprintln!(
        "cos(dark, dull) {:.3}, cos(dark, timetable) {:.3}",
        s(0, 1),
        s(0, 2)
    );
    assert!(s(0, 1) > s(0, 2) + 0.2 && s(1, 0) > s(1, 2) + 0.2);

    // One sentence alone embeds as it does in a padded batch.
    let alone = encoder.embed(&sentences[2..3], false).expect("embeds");
    assert!(max_abs_diff(alone, emb.slice([2..3, 0..384])) < 1e-5);
}

#[test]
fn inspect_forward_writes_the_reference_outputs() {
    let device = Device::flex();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = case();
    for suffix in ["", "_ids_only", "_empty_row"] {
        let out_path = tmp.path().join("out.safetensors");
        let out = common::inspect_forward(
            "bert",
            &dir,
            &dir.join(format!("inputs{suffix}.safetensors")),
            &out_path,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = Tensors::read(&out_path).expect("written");
        let expected =
            Tensors::read(&dir.join(format!("outputs{suffix}.safetensors"))).expect("ref");
        assert_eq!(
            got.tensors.keys().collect::<Vec<_>>(),
            ["last_hidden_state", "pooler_output"]
        );
        let a: Tensor<3> = got.tensor("last_hidden_state", &device).expect("got");
        let b: Tensor<3> = expected.tensor("last_hidden_state", &device).expect("ref");
        assert!(max_abs_diff(a, b) <= 1e-4, "{suffix}");
        let a: Tensor<2> = got.tensor("pooler_output", &device).expect("got");
        let b: Tensor<2> = expected.tensor("pooler_output", &device).expect("ref");
        assert!(max_abs_diff(a, b) <= 1e-4, "{suffix}");
    }
    // Ids outside the vocabulary are a clear error, not a panic.
    let bad = tmp.path().join("bad.safetensors");
    let mut inputs = Tensors::default();
    inputs
        .insert(
            "input_ids",
            Tensor::<2>::from_data(TensorData::new(vec![1f32, 500.], [1, 2]), &device),
        )
        .expect("insert");
    inputs.write(&bad).expect("write");
    let out = common::inspect_forward("bert", &dir, &bad, &tmp.path().join("x.safetensors"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("500") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn configs_that_hf_refuses_are_refused() {
    for (edit, want) in [
        (
            ("num_attention_heads", serde_json::json!(5)),
            "not a multiple",
        ),
        (("is_decoder", serde_json::json!(true)), "is_decoder"),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(case().join("config.json")).expect("config"),
        )
        .expect("json");
        config[edit.0] = edit.1;
        std::fs::write(tmp.path().join("config.json"), config.to_string()).expect("write");
        let err = read_bert_config(tmp.path()).expect_err(want).to_string();
        assert!(err.contains(want), "{err}");
    }
}
