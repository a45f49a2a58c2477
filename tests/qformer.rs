//! The Q-Former against HF `transformers`' `Blip2QFormerModel` on tiny random checkpoints
//! (fixtures from scripts/fixtures/make_qformer_fixtures.py): a padded encoder mask with
//! cross-attention every second layer, and queries followed by text; both key layouts; the
//! ITG mask; initialisation from BERT; a finite-difference gradient check on one layer.

mod common;

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use calm::io::checkpoint::{CheckpointError, Tensors};
use calm::io::hf::{load_qformer, read_qformer_config};
use calm::model::bert::{multimodal_causal_bias, padding_bias};
use calm::model::qformer::{QFormer, QFormerError};
use calm::model::{BertConfig, HiddenAct, QFormerConfig};

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/qformer")
        .join(name)
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).abs().max().into_scalar::<f32>()
}

fn read(path: &Path) -> Tensors {
    Tensors::read(path).unwrap_or_else(|e| panic!("{e}"))
}

/// The queries-only call on `inputs{suffix}`, against `outputs{suffix}`.
fn run_queries(model: &QFormer, dir: &Path, suffix: &str, device: &Device) -> f32 {
    let inputs = read(&dir.join(format!("inputs{suffix}.safetensors")));
    let expected = read(&dir.join(format!("outputs{suffix}.safetensors")));
    let q: Tensor<3> = inputs.tensor("query_embeds", device).expect("queries");
    let enc: Tensor<3> = inputs.tensor("encoder_hidden_states", device).expect("enc");
    // The integer mask is skipped by `Tensors` (it keeps floats); rebuild it from the fixture.
    let mask = match suffix {
        "_no_mask" => None,
        _ => Some(Tensor::<2>::from_data(
            TensorData::new([[1f32; 7], [1., 1., 1., 1., 0., 0., 0.]].concat(), [2, 7]),
            device,
        )),
    };
    let out = model.forward(q, enc, mask);
    let e: Tensor<3> = expected.tensor("last_hidden_state", device).expect("out");
    max_abs_diff(out, e)
}

#[test]
fn padded_encoder_mask_and_cross_attention_every_second_layer_match_the_reference() {
    let device = Device::flex();
    let dir = case("a_queries_mask");
    let (config, encoder_width) = read_qformer_config(&dir).expect("config");
    assert_eq!(config.cross_attention_frequency, 2);
    assert_eq!(encoder_width, 24);
    let (model, report) = load_qformer(&dir, &device).expect("loads");
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    let cross: Vec<bool> = model
        .encoder
        .layer
        .iter()
        .map(|l| l.crossattention.is_some())
        .collect();
    assert_eq!(cross, [true, false, true, false]);
    for suffix in ["", "_no_mask"] {
        let err = run_queries(&model, &dir, suffix, &device);
        eprintln!("a_queries_mask{suffix}: max abs error {err:e}");
        assert!(err <= 1e-4, "{suffix}: {err}");
    }
    // The mask matters: the padded sample's reference output differs from its unmasked one.
    let masked = read(&dir.join("outputs.safetensors"));
    let plain = read(&dir.join("outputs_no_mask.safetensors"));
    let a: Tensor<3> = masked.tensor("last_hidden_state", &device).expect("a");
    let b: Tensor<3> = plain.tensor("last_hidden_state", &device).expect("b");
    let [_, q, h] = a.dims();
    let first = max_abs_diff(
        a.clone().slice([0..1, 0..q, 0..h]),
        b.clone().slice([0..1, 0..q, 0..h]),
    );
    let second = max_abs_diff(a.slice([1..2, 0..q, 0..h]), b.slice([1..2, 0..q, 0..h]));
    assert!(first < 1e-6 && second > 1e-2, "{first} {second}");
}

#[test]
fn queries_followed_by_text_match_the_reference() {
    let device = Device::flex();
    let dir = case("b_text");
    let (model, _) = load_qformer(&dir, &device).expect("loads");
    assert!(model.has_text_feed_forward());
    let inputs = read(&dir.join("inputs.safetensors"));
    let expected = read(&dir.join("outputs.safetensors"));
    let x: Tensor<3> = inputs.tensor("query_embeds", &device).expect("x");
    let enc: Tensor<3> = inputs
        .tensor("encoder_hidden_states", &device)
        .expect("enc");
    let mut mask = vec![1f32; 20];
    mask[8] = 0.0;
    mask[9] = 0.0;
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [2, 10]), &device);
    let out = model
        .forward_multimodal(x, 4, Some(padding_bias(mask)), enc, None)
        .expect("runs");
    let e: Tensor<3> = expected.tensor("last_hidden_state", &device).expect("out");
    let err = max_abs_diff(out, e);
    eprintln!("b_text: max abs error {err:e}");
    assert!(err <= 1e-4, "{err}");
}

/// Copies a fixture checkpoint with its keys renamed and its config rewritten.
fn rewritten(
    dir: &Path,
    rename: impl Fn(&str) -> String,
    config: impl Fn(serde_json::Value) -> serde_json::Value,
    extra: &[&str],
) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut tensors = read(&dir.join("model.safetensors")).rename(rename);
    for key in extra {
        let t = Tensor::<1>::zeros([3], &Device::flex());
        tensors.insert(key, t).expect("insert");
    }
    tensors
        .write(&tmp.path().join("model.safetensors"))
        .expect("write");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).expect("config"))
            .expect("json");
    std::fs::write(
        tmp.path().join("config.json"),
        serde_json::to_string(&config(json)).expect("json"),
    )
    .expect("write config");
    tmp
}

#[test]
fn the_lavis_and_older_hf_key_layout_loads_to_the_same_outputs() {
    let device = Device::flex();
    let dir = case("a_queries_mask");
    let old = rewritten(
        &dir,
        |k| {
            k.replace(".attention.attention.", ".attention.self.")
                .replace(".crossattention.attention.", ".crossattention.self.")
                .replace("layernorm.", "embeddings.LayerNorm.")
        },
        |c| c,
        &[],
    );
    let keys = read(&old.path().join("model.safetensors"));
    assert!(
        keys.tensors
            .contains_key("encoder.layer.0.attention.self.query.weight")
            && keys
                .tensors
                .contains_key("encoder.layer.2.crossattention.self.value.bias")
    );
    let (model, report) = load_qformer(old.path(), &device).expect("loads");
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    let err = run_queries(&model, &dir, "", &device);
    assert!(err <= 1e-4, "{err}");
}

#[test]
fn a_full_blip2_checkpoint_loads_its_qformer_and_reports_the_rest() {
    let device = Device::flex();
    let dir = case("a_queries_mask");
    let full = rewritten(
        &dir,
        |k| format!("qformer.{k}"),
        |c| serde_json::json!({"model_type": "blip-2", "qformer_config": c}),
        &["query_tokens", "language_projection.bias"],
    );
    let (model, report) = load_qformer(full.path(), &device).expect("loads");
    assert_eq!(
        report.unexpected,
        ["language_projection.bias", "query_tokens"]
    );
    assert!(run_queries(&model, &dir, "", &device) <= 1e-4);
}

#[test]
fn a_missing_weight_is_an_error_naming_it() {
    let dir = case("a_queries_mask");
    let broken = rewritten(
        &dir,
        |k| {
            k.replace(
                "encoder.layer.2.crossattention.output.LayerNorm.weight",
                "gone",
            )
        },
        |c| c,
        &[],
    );
    let err = load_qformer(broken.path(), &Device::flex())
        .expect_err("must fail")
        .to_string();
    assert!(
        err.contains("encoder.layer.2.crossattention.output.LayerNorm.weight"),
        "{err}"
    );
    let vision = rewritten(
        &dir,
        |k| k.to_string(),
        |mut c| {
            c["model_type"] = "bert".into();
            c
        },
        &[],
    );
    let err = load_qformer(vision.path(), &Device::flex()).expect_err("refused");
    assert!(
        matches!(&err, CheckpointError::Format { message, .. } if message.contains("`bert`")),
        "{err}"
    );
}

fn tiny(text: bool) -> QFormerConfig {
    QFormerConfig {
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 24,
        hidden_act: HiddenAct::Gelu,
        cross_attention_frequency: 2,
        layer_norm_eps: 1e-12,
        use_qformer_text_input: text,
    }
}

#[test]
fn text_needs_the_text_feed_forward() {
    let device = Device::flex();
    let model = tiny(false).init(8, &device);
    let x = Tensor::<3>::random([1, 5, 16], Distribution::Default, &device);
    let enc = Tensor::<3>::random([1, 3, 8], Distribution::Default, &device);
    assert_eq!(
        model
            .forward_multimodal(x.clone(), 3, None, enc.clone(), None)
            .expect_err("no text FFN"),
        QFormerError::NoTextFeedForward
    );
    assert!(model.forward_text(x.clone(), None).is_err());
    assert!(matches!(
        model.forward_multimodal(x.clone(), 6, None, enc.clone(), None),
        Err(QFormerError::QueryLength { .. })
    ));
    // All tokens being queries is the plain path.
    let all = model
        .forward_multimodal(x.clone(), 5, None, enc.clone(), None)
        .expect("queries only");
    assert!(max_abs_diff(all, model.forward(x, enc, None)) == 0.0);
}

#[test]
fn under_the_itg_mask_queries_never_see_the_text_and_text_never_sees_the_future() {
    let device = Device::flex();
    let model = tiny(true).init(8, &device);
    let (q, t) = (3, 4);
    let x = Tensor::<3>::random([1, q + t, 16], Distribution::Default, &device);
    let enc = Tensor::<3>::random([1, 5, 8], Distribution::Default, &device);
    let padding = Tensor::<2>::ones([1, t], &device);
    let run = |x: Tensor<3>| {
        model
            .forward_multimodal(
                x,
                q,
                Some(multimodal_causal_bias(q, padding.clone())),
                enc.clone(),
                None,
            )
            .expect("runs")
    };
    let base = run(x.clone());
    // Change the last text token only.
    let changed = x.clone().slice_assign(
        [0..1, q + t - 1..q + t, 0..16],
        Tensor::random([1, 1, 16], Distribution::Default, &device),
    );
    let other = run(changed);
    let earlier = max_abs_diff(
        base.clone().slice([0..1, 0..q + t - 1, 0..16]),
        other.clone().slice([0..1, 0..q + t - 1, 0..16]),
    );
    let last = max_abs_diff(
        base.slice([0..1, q + t - 1..q + t, 0..16]),
        other.slice([0..1, q + t - 1..q + t, 0..16]),
    );
    assert!(earlier < 1e-6 && last > 1e-3, "{earlier} {last}");
}

/// Every float parameter's id and values.
fn params<M: Module>(module: &M) -> Vec<(ParamId, Vec<f32>)> {
    struct Collect(Vec<(ParamId, Vec<f32>)>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = param
                .val()
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32");
            self.0.push((param.id, values));
        }
    }
    let mut c = Collect(Vec::new());
    module.visit(&mut c);
    c.0
}

#[test]
fn initialisation_from_bert_copies_its_layers_with_ids_of_their_own() {
    let device = Device::flex();
    let bert = BertConfig {
        vocab_size: 50,
        hidden_size: 16,
        num_hidden_layers: 3,
        num_attention_heads: 4,
        intermediate_size: 24,
        max_position_embeddings: 8,
        ..BertConfig::default()
    }
    .init(true, &device);
    let config = tiny(true);
    let model = config.init_from_bert(&bert, 8, &device).expect("inits");
    let same = |a: Vec<(ParamId, Vec<f32>)>, b: Vec<(ParamId, Vec<f32>)>| {
        assert_eq!(a.len(), b.len());
        for ((ia, va), (ib, vb)) in a.iter().zip(&b) {
            assert_eq!(va, vb, "copied values");
            assert_ne!(ia, ib, "a copy has its own parameter id");
        }
    };
    for i in 0..2 {
        let ours = &model.encoder.layer[i];
        let theirs = &bert.encoder.layer[i];
        let text = ours.intermediate.as_ref().expect("text FFN");
        same(params(&ours.attention), params(&theirs.attention));
        same(
            params(&ours.intermediate_query),
            params(&theirs.intermediate),
        );
        same(params(&ours.output_query), params(&theirs.output));
        same(params(text), params(&theirs.intermediate));
        // The query and text feed-forwards start equal but are distinct parameters.
        same(params(&ours.intermediate_query), params(text));
    }
    same(params(&model.layernorm), params(&bert.embeddings.LayerNorm));
    // Cross-attention is fresh: BERT's init, N(0, 0.02) weights and zero biases.
    let cross = model.encoder.layer[0]
        .crossattention
        .as_ref()
        .expect("cross");
    let w = cross.attention.key.weight.val();
    assert_eq!(w.dims(), [8, 16]);
    let std = w.clone().var(0).mean().sqrt().into_scalar::<f32>();
    assert!((0.01..0.03).contains(&std), "std {std}");
    let bias = cross.attention.key.bias.as_ref().expect("bias").val();
    assert_eq!(bias.abs().max().into_scalar::<f32>(), 0.0);

    let err = QFormerConfig {
        num_hidden_layers: 4,
        ..config.clone()
    }
    .init_from_bert(&bert, 8, &device)
    .expect_err("more layers than BERT");
    assert!(err.to_string().contains("num_hidden_layers"), "{err}");
    let err = QFormerConfig {
        hidden_size: 32,
        ..config
    }
    .init_from_bert(&bert, 8, &device)
    .expect_err("other width");
    assert!(err.to_string().contains("hidden_size"), "{err}");
}

/// Central differences of a scalar loss of one Q-Former layer (self-attention, cross-attention
/// to a padded memory, query feed-forward) against autodiff, for inputs and weights.
#[test]
fn one_layer_passes_a_finite_difference_gradient_check() {
    let device = Device::flex().autodiff();
    let config = QFormerConfig {
        num_hidden_layers: 1,
        cross_attention_frequency: 1,
        ..tiny(false)
    };
    let model = config.init(6, &device);
    let x = Tensor::<3>::random([2, 3, 16], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let enc =
        Tensor::<3>::random([2, 5, 6], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let mask = Tensor::<2>::from_data(
        TensorData::new(vec![1f32, 1., 1., 1., 1., 1., 1., 1., 0., 0.], [2, 5]),
        &device,
    );
    let probe = Tensor::<3>::random([2, 3, 16], Distribution::Normal(0.0, 1.0), &device);
    let loss = |model: &QFormer, x: Tensor<3>, enc: Tensor<3>| {
        (model.forward(x, enc, Some(mask.clone())) * probe.clone()).sum()
    };
    let grads = loss(&model, x.clone(), enc.clone()).backward();
    let to_vec = |t: Tensor<3>| {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32")
    };
    let gx = to_vec(x.grad(&grads).expect("grad x"));
    let genc = to_vec(enc.grad(&grads).expect("grad enc"));
    let wq = model.encoder.layer[0]
        .crossattention
        .as_ref()
        .expect("cross")
        .attention
        .value
        .weight
        .val();
    let gw = wq
        .grad(&grads)
        .expect("grad w")
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32");

    // A check of zeros against zeros would prove nothing.
    for g in [&gx, &genc, &gw] {
        assert!(g.iter().any(|v| v.abs() > 1e-3), "non-trivial gradients");
    }
    let plain = model.valid();
    let xv = to_vec(x.clone().without_autodiff());
    let encv = to_vec(enc.clone().without_autodiff());
    let eps = 1e-2f32;
    let mut worst = 0f32;
    let mut check = |analytic: f32, plus: f32, minus: f32| {
        let numeric = (plus - minus) / (2.0 * eps);
        let err = (numeric - analytic).abs() / (1.0 + analytic.abs());
        worst = worst.max(err);
    };
    let scalar = |m: &QFormer, xv: &[f32], encv: &[f32]| {
        let d = Device::flex();
        let x = Tensor::<3>::from_data(TensorData::new(xv.to_vec(), [2, 3, 16]), &d);
        let enc = Tensor::<3>::from_data(TensorData::new(encv.to_vec(), [2, 5, 6]), &d);
        let mask = mask.clone().without_autodiff();
        let probe = probe.clone().without_autodiff();
        (m.forward(x, enc, Some(mask)) * probe)
            .sum()
            .into_scalar::<f32>()
    };
    for i in [0, 7, 20, 47, 60, 95] {
        let (mut p, mut m) = (xv.clone(), xv.clone());
        p[i] += eps;
        m[i] -= eps;
        check(gx[i], scalar(&plain, &p, &encv), scalar(&plain, &m, &encv));
    }
    // Entries of the padded encoder tokens (sample 1, tokens 3 and 4) get zero gradient.
    for i in [30 + 18, 30 + 29] {
        assert_eq!(genc[i], 0.0, "padded memory token {i}");
    }
    for i in [0, 11, 29, 33] {
        let (mut p, mut m) = (encv.clone(), encv.clone());
        p[i] += eps;
        m[i] -= eps;
        check(genc[i], scalar(&plain, &xv, &p), scalar(&plain, &xv, &m));
    }
    let w0 = plain.encoder.layer[0]
        .crossattention
        .as_ref()
        .expect("cross")
        .attention
        .value
        .weight
        .val();
    let wv = w0
        .clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32");
    for i in [0, 13, 50, 95] {
        let with = |delta: f32| {
            let mut v = wv.clone();
            v[i] += delta;
            let mut m = plain.clone();
            let cross = m.encoder.layer[0].crossattention.as_mut().expect("cross");
            cross.attention.value.weight = Param::from_tensor(Tensor::from_data(
                TensorData::new(v, [6, 16]),
                &Device::flex(),
            ));
            scalar(&m, &xv, &encv)
        };
        check(gw[i], with(eps), with(-eps));
    }
    eprintln!("worst relative gradient error {worst:e}");
    assert!(worst < 2e-2, "worst relative error {worst}");
}

/// `inspect forward --arch qformer` on a checkpoint folder and an inputs file.
fn inspect(checkpoint: &Path, inputs: &Path, output: &Path) -> std::process::Output {
    common::inspect_forward("qformer", checkpoint, inputs, output)
}

#[test]
fn inspect_forward_writes_the_reference_last_hidden_state() {
    let device = Device::flex();
    let tmp = tempfile::tempdir().expect("tempdir");
    for (dir, suffix) in [
        ("a_queries_mask", ""),
        ("a_queries_mask", "_float_mask"),
        ("a_queries_mask", "_no_mask"),
        ("a_queries_mask", "_empty_image"),
        ("b_text", ""),
    ] {
        let dir = case(dir);
        let out_path = tmp.path().join("out.safetensors");
        let out = inspect(
            &dir,
            &dir.join(format!("inputs{suffix}.safetensors")),
            &out_path,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = read(&out_path);
        assert_eq!(
            got.tensors.keys().collect::<Vec<_>>(),
            ["last_hidden_state"]
        );
        let a: Tensor<3> = got.tensor("last_hidden_state", &device).expect("got");
        let expected = read(&dir.join(format!("outputs{suffix}.safetensors")));
        let b: Tensor<3> = expected.tensor("last_hidden_state", &device).expect("ref");
        let err = max_abs_diff(a, b);
        assert!(err <= 1e-4, "{} {suffix}: {err}", dir.display());
    }
    // Without `encoder_hidden_states`: a one-line error naming the tensor.
    let bert_inputs = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bert/a_padding/inputs.safetensors");
    let out = inspect(
        &case("a_queries_mask"),
        &bert_inputs,
        &tmp.path().join("x.safetensors"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("query_embeds"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn inspect_forward_refuses_inconsistent_inputs_in_one_line() {
    let device = Device::flex();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = case("a_queries_mask");
    let rand = |shape: [usize; 3]| Tensor::<3>::random(shape, Distribution::Default, &device);
    // (expected message, query_embeds shape, encoder_hidden_states shape, mask, query_length);
    // the checkpoint's hidden_size is 32 and its encoder_hidden_size 24.
    type Case = (
        &'static str,
        [usize; 3],
        [usize; 3],
        Option<Tensor<2>>,
        Option<Tensor<1>>,
    );
    let cases: Vec<Case> = vec![
        (
            "encoder_hidden_size is 24",
            [2, 5, 32],
            [2, 7, 20],
            None,
            None,
        ),
        ("hidden_size is 32", [2, 5, 30], [2, 7, 24], None, None),
        (
            "expected [2, 7]",
            [2, 5, 32],
            [2, 7, 24],
            Some(Tensor::ones([2, 6], &device)),
            None,
        ),
        ("batch 3", [2, 5, 32], [3, 7, 24], None, None),
        (
            "non-negative integer",
            [2, 5, 32],
            [2, 7, 24],
            None,
            Some(Tensor::from_data(
                TensorData::new(vec![-1f32], [1]),
                &device,
            )),
        ),
    ];
    for (i, (want, queries, encoder, mask, query_length)) in cases.into_iter().enumerate() {
        let mut inputs = Tensors::default();
        inputs
            .insert("query_embeds", rand(queries))
            .expect("insert");
        inputs
            .insert("encoder_hidden_states", rand(encoder))
            .expect("insert");
        if let Some(m) = mask {
            inputs.insert("encoder_attention_mask", m).expect("insert");
        }
        if let Some(q) = query_length {
            inputs.insert("query_length", q).expect("insert");
        }
        let path = tmp.path().join(format!("in{i}.safetensors"));
        inputs.write(&path).expect("write");
        let out = inspect(&dir, &path, &tmp.path().join("x.safetensors"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want) && !err.contains("panicked"),
            "{want}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    // One image's features broadcast over a batch of queries, as in HF.
    let mut inputs = Tensors::default();
    let q = rand([3, 5, 32]);
    let enc = rand([1, 7, 24]);
    inputs.insert("query_embeds", q.clone()).expect("insert");
    inputs
        .insert("encoder_hidden_states", enc.clone())
        .expect("insert");
    let path = tmp.path().join("broadcast.safetensors");
    inputs.write(&path).expect("write");
    let out_path = tmp.path().join("out.safetensors");
    let out = inspect(&dir, &path, &out_path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (model, _) = load_qformer(&dir, &device).expect("loads");
    let want = model.forward(q, enc.expand([3, 7, 24]), None);
    let got: Tensor<3> = read(&out_path)
        .tensor("last_hidden_state", &device)
        .expect("out");
    assert!(max_abs_diff(got, want) < 1e-6);
}
