//! The LLaMA decoder against HF `transformers`' `LlamaForCausalLM` on tiny random checkpoints
//! (fixtures from scripts/fixtures/make_llama_fixtures.py): grouped-query attention with an
//! untied head, tied embeddings with llama3 rope scaling, linear scaling with attention
//! biases; each on a right-padded batch, through the library and through `inspect forward`;
//! and a bf16 checkpoint split into shards.
//! Also: the KV cache gives the uncached logits, and bad checkpoints are clear errors.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use calm::io::checkpoint::Tensors;
use calm::io::llama::{load_llama, read_llama_config};
use calm::model::llama::{KvCache, RopeScaling};

const CASES: [&str; 3] = ["gqa_untied", "tied_llama3", "linear_bias"];

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/llama")
        .join(name)
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

fn inputs(dir: &Path, device: &Device) -> (Tensor<2, Int>, Tensor<2>) {
    let bytes = std::fs::read(dir.join("inputs.safetensors")).expect("inputs");
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let raw = |key: &str| {
        let view = file.tensor(key).expect(key);
        let v: Vec<i64> = view
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
            .collect();
        (v, [view.shape()[0], view.shape()[1]])
    };
    let (ids, shape) = raw("input_ids");
    let (mask, _) = raw("attention_mask");
    let mask: Vec<f32> = mask.into_iter().map(|m| m as f32).collect();
    (
        Tensor::from_data(TensorData::new(ids, shape), device),
        Tensor::from_data(TensorData::new(mask, shape), device),
    )
}

fn expected(dir: &Path, device: &Device) -> Tensor<3> {
    Tensors::read(&dir.join("outputs.safetensors"))
        .expect("outputs")
        .tensor("logits", device)
        .expect("logits")
}

#[test]
fn logits_of_a_padded_batch_match_the_reference() {
    let device = Device::flex();
    for name in CASES.into_iter().chain(["gqa_untied_bf16_sharded"]) {
        let dir = case(name);
        let (model, config, report) = load_llama(&dir, &device).expect("loads");
        assert!(
            report.unexpected.is_empty(),
            "{name}: {:?}",
            report.unexpected
        );
        assert_eq!(model.lm_head.is_none(), config.tie_word_embeddings);
        let (ids, mask) = inputs(&dir, &device);
        let err = max_abs_diff(model.forward(ids, Some(mask)), expected(&dir, &device));
        println!("{name}: max abs error {err:e}");
        assert!(err <= 1e-4, "{name}: {err}");
    }
}

#[test]
fn the_configs_carry_their_rope_scaling_and_head_sharing() {
    let c = read_llama_config(&case("tied_llama3")).expect("config");
    assert!(matches!(c.rope_scaling, Some(RopeScaling::Llama3 { factor, .. }) if factor == 8.0));
    assert_eq!((c.num_attention_heads, c.num_key_value_heads), (4, 1));
    assert!(c.tie_word_embeddings);
    let c = read_llama_config(&case("linear_bias")).expect("config");
    assert_eq!(c.rope_scaling, Some(RopeScaling::Linear { factor: 2.0 }));
    assert_eq!(c.rope_theta, 500.0);
}

#[test]
fn inspect_forward_writes_the_reference_logits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for name in CASES {
        let dir = case(name);
        let out = tmp.path().join(format!("{name}.safetensors"));
        let run = common::inspect_forward("llama", &dir, &dir.join("inputs.safetensors"), &out);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let device = Device::flex();
        let got: Tensor<3> = Tensors::read(&out)
            .expect("output")
            .tensor("logits", &device)
            .expect("logits");
        assert!(max_abs_diff(got, expected(&dir, &device)) <= 1e-4, "{name}");
    }
}

#[test]
fn the_kv_cache_gives_the_uncached_logits() {
    let device = Device::flex();
    for name in CASES {
        let (model, _, _) = load_llama(&case(name), &device).expect("loads");
        let (ids, _) = inputs(&case(name), &device);
        let full = model.forward(ids.clone(), None);
        // A prefix of 5 tokens, then the other 4 one at a time, through the cache.
        let mut cache = KvCache::new();
        let mut parts = vec![model.forward_embeds(
            model.embed(ids.clone().narrow(1, 0, 5)),
            None,
            None,
            Some(&mut cache),
        )];
        for t in 5..9 {
            parts.push(model.forward_embeds(
                model.embed(ids.clone().narrow(1, t, 1)),
                None,
                None,
                Some(&mut cache),
            ));
        }
        assert_eq!(cache.len(), 9);
        let err = max_abs_diff(Tensor::cat(parts, 1), full);
        assert!(err <= 1e-5, "{name}: {err}");
    }
}

#[test]
fn bad_checkpoints_are_errors_naming_what_is_wrong() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let src = case("gqa_untied");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).expect("copy");
    // A checkpoint without the head.
    let all = Tensors::read(&src.join("model.safetensors")).expect("read");
    let (_, kept) = {
        let mut t = Tensors::default();
        for (k, v) in all.tensors {
            if k != "lm_head.weight" {
                t.tensors.insert(k, v);
            }
        }
        ((), t)
    };
    kept.write(&dir.join("model.safetensors")).expect("write");
    let err = load_llama(dir, &Device::flex()).expect_err("no head");
    assert!(err.to_string().contains("lm_head.weight"), "{err}");
    // A config HF would not build.
    let text = std::fs::read_to_string(src.join("config.json")).expect("config");
    std::fs::write(
        dir.join("config.json"),
        text.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"),
    )
    .expect("write");
    let err = read_llama_config(dir).expect_err("3 does not divide 4");
    assert!(err.to_string().contains("num_key_value_heads"), "{err}");
    // Weights of another shape than the config's: the error names the tensor.
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).expect("copy");
    std::fs::write(
        dir.join("config.json"),
        text.replace("\"intermediate_size\": 48", "\"intermediate_size\": 40"),
    )
    .expect("write");
    let err = load_llama(dir, &Device::flex()).expect_err("shape mismatch");
    assert!(err.to_string().contains("mlp.gate_proj.weight"), "{err}");
}

#[derive(serde::Deserialize)]
struct Generated {
    prompts: Vec<Vec<u32>>,
    replies: Vec<Vec<u32>>,
}

#[test]
fn greedy_generation_of_a_left_padded_batch_matches_the_reference_with_and_without_cache() {
    use calm::model::generate::{GenerationConfig, generate};
    let device = Device::flex();
    for name in CASES {
        let (model, _, _) = load_llama(&case(name), &device).expect("loads");
        let want: Generated = serde_json::from_str(
            &std::fs::read_to_string(case(name).join("generate.json")).expect("fixture"),
        )
        .expect("json");
        for use_cache in [true, false] {
            let config = GenerationConfig {
                max_new_tokens: 8,
                use_cache,
                ..GenerationConfig::default()
            };
            let mut streamed = vec![Vec::new(); 2];
            let got = generate(
                &model,
                &want.prompts,
                &[],
                &config,
                |_, _| false,
                |row, t| streamed[row].push(t),
            )
            .expect("generates");
            assert_eq!(got, want.replies, "{name}, cache {use_cache}");
            assert_eq!(streamed, got);
        }
    }
}

#[test]
fn sampling_is_seeded_and_stops_where_told() {
    use calm::model::generate::{GenerationConfig, choose, generate};
    use rand::SeedableRng;
    let device = Device::flex();
    let (model, _, _) = load_llama(&case("gqa_untied"), &device).expect("loads");
    let prompts = vec![vec![5, 6, 7]];
    let config = GenerationConfig {
        max_new_tokens: 12,
        temperature: 0.8,
        top_k: Some(20),
        top_p: Some(0.9),
        repetition_penalty: 1.3,
        seed: 3,
        ..GenerationConfig::default()
    };
    let run = |c: &GenerationConfig, stops: &[u32]| {
        generate(&model, &prompts, stops, c, |_, _| false, |_, _| {}).expect("generates")
    };
    let a = run(&config, &[]);
    assert_eq!(a, run(&config, &[]), "same seed, same tokens");
    assert_eq!(a[0].len(), 12);
    // A stop token ends the reply before it.
    let stopped = run(&config, &[a[0][4]]);
    let first = a[0].iter().position(|&t| t == a[0][4]).expect("present");
    assert_eq!(stopped[0], a[0][..first]);
    // A caller's stop check (a stop string, after decoding) ends it after the token.
    let short = generate(
        &model,
        &prompts,
        &[],
        &config,
        |_, r| r.len() == 3,
        |_, _| {},
    )
    .expect("generates");
    assert_eq!(short[0], a[0][..3]);

    // The logit processors, by hand: top-k 1 is greedy; the penalty divides positive logits
    // and multiplies negative ones.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let sample = GenerationConfig {
        temperature: 1.0,
        top_k: Some(1),
        ..GenerationConfig::default()
    };
    assert_eq!(choose(&mut [0.1, 2.0, 1.0], &[], &sample, &mut rng), 1);
    let penalised = GenerationConfig {
        repetition_penalty: 2.0,
        ..GenerationConfig::default()
    };
    let mut logits = [3.0, 2.0, -1.0];
    assert_eq!(choose(&mut logits, &[0, 2], &penalised, &mut rng), 1);
    assert_eq!(logits, [1.5, 2.0, -2.0]);
    // top-p keeps the smallest head reaching p: here only the first token.
    let nucleus = GenerationConfig {
        temperature: 1.0,
        top_p: Some(0.5),
        ..GenerationConfig::default()
    };
    for _ in 0..20 {
        assert_eq!(choose(&mut [5.0, 0.0, 0.0], &[], &nucleus, &mut rng), 0);
    }
}

#[test]
fn generation_refuses_a_prompt_beyond_the_context_and_stops_where_it_ends() {
    use calm::model::generate::{GenerateError, GenerationConfig, generate};
    let device = Device::flex();
    let (model, config, _) = load_llama(&case("gqa_untied"), &device).expect("loads");
    let context = config.max_position_embeddings;
    assert_eq!(model.max_position_embeddings, context);
    let greedy = GenerationConfig {
        max_new_tokens: 12,
        ..GenerationConfig::default()
    };
    let run = |prompt: Vec<u32>| generate(&model, &[prompt], &[], &greedy, |_, _| false, |_, _| {});
    let err = run(vec![5; context + 1]).expect_err("longer than the context");
    assert!(
        matches!(err, GenerateError::TooLong { row: 0, tokens, context: c } if tokens == context + 1 && c == context),
        "{err}"
    );
    // Four places left: four tokens, not twelve.
    let replies = run(vec![5; context - 4]).expect("fits");
    assert_eq!(replies[0].len(), 4);
    assert_eq!(run(vec![5; 3]).expect("fits")[0].len(), 12);
}
