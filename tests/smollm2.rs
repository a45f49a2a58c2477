//! The real SmolLM2-135M-Instruct (Q4_1 GGUF, fetched by scripts/fetch_models.sh) against
//! transformers on the same file (fixture from scripts/fixtures/make_smollm2_fixtures.py,
//! where transformers dequantises the GGUF and undoes the q/k permutation itself): the GGUF's
//! tokenizer gives the same ids, the chat prompt is the same text, the logits on a fixed
//! prompt agree within 1e-3, and greedy decoding answers the capital of France with the
//! reference's tokens, with and without the KV cache.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use calm::io::checkpoint::Tensors;
use calm::io::gguf::GgufFile;
use calm::io::llama::load_llama_gguf;
use calm::io::models::{FetchedModel, model_dir};
use calm::io::tokenizer::load_gguf_tokenizer;
use calm::model::chat::Role;
use calm::model::generate::{GenerationConfig, generate};

#[derive(serde::Deserialize)]
struct Reference {
    texts: Vec<String>,
    ids: Vec<Vec<u32>>,
    question: String,
    prompt: String,
    prompt_ids: Vec<u32>,
    reply_ids: Vec<u32>,
    reply: String,
    fixed_ids: Vec<i64>,
    sampled_ids: Vec<usize>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2")
}

fn reference() -> Reference {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).expect("read"))
        .expect("json")
}

fn gguf() -> GgufFile {
    let dir = model_dir(FetchedModel::Smollm2).expect("run scripts/fetch_models.sh smollm2");
    GgufFile::read(dir.join(FetchedModel::Smollm2.main_file())).expect("gguf")
}

#[test]
fn smollm2_matches_the_reference_and_knows_the_capital_of_france() {
    let r = reference();
    let file = gguf();
    let tok = load_gguf_tokenizer(&file).expect("tokenizer");
    for (text, ids) in r.texts.iter().zip(&r.ids) {
        assert_eq!(&tok.encode(text).expect("encode"), ids, "{text:?}");
    }
    let prompt = tok.template.prompt(&[(Role::User, r.question.as_str())]);
    assert_eq!(prompt, r.prompt);
    let prompt_ids = tok.encode_prompt(&prompt).expect("encode");
    assert_eq!(prompt_ids, r.prompt_ids);

    let device = Device::flex();
    let (model, config, report) = load_llama_gguf(&file, &device).expect("loads");
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    assert_eq!(
        (config.num_hidden_layers, config.num_key_value_heads),
        (30, 3)
    );
    assert!(config.tie_word_embeddings);

    // Logits on a fixed prompt.
    let t = r.fixed_ids.len();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(r.fixed_ids.clone(), [1, t]), &device);
    let logits = model.forward(ids, None);
    let v = config.vocab_size;
    let want = Tensors::read(&fixtures().join("logits.safetensors")).expect("logits");
    let last: Tensor<1> = want.tensor("last", &device).expect("last");
    let got_last = logits.clone().narrow(1, t - 1, 1).reshape([v]);
    let err_last = (got_last - last).abs().max().into_scalar::<f32>();
    let sampled: Tensor<2> = want.tensor("sampled", &device).expect("sampled");
    let index = Tensor::<1, Int>::from_data(
        TensorData::new(
            r.sampled_ids.iter().map(|&i| i as i64).collect::<Vec<_>>(),
            [r.sampled_ids.len()],
        ),
        &device,
    );
    let got_sampled = logits.reshape([t, v]).select(1, index);
    let err_sampled = (got_sampled - sampled).abs().max().into_scalar::<f32>();
    println!("logits: max abs error {err_last:e} (last position), {err_sampled:e} (sampled)");
    assert!(err_last <= 1e-3 && err_sampled <= 1e-3);

    // Greedy decoding with the chat template, cached and not.
    for use_cache in [true, false] {
        let config = GenerationConfig {
            max_new_tokens: r.reply_ids.len() + 4,
            use_cache,
            ..GenerationConfig::default()
        };
        let replies = generate(
            &model,
            std::slice::from_ref(&prompt_ids),
            &tok.eos,
            &config,
            |_, _| false,
            |_, _| {},
        )
        .expect("generates");
        let text = tok.decode(&replies[0]).expect("decode");
        println!("cache {use_cache}: {text:?}");
        assert!(text.contains("Paris"), "{text}");
        assert_eq!(text.trim(), r.reply.trim());
        // The reference stops at <|im_end|> and returns it; ours stops before it.
        assert_eq!(replies[0], r.reply_ids[..r.reply_ids.len() - 1]);
    }
}

/// `inspect generate` on SmolLM2's GGUF file with `args`, which must succeed: its stdout and
/// stderr.
fn inspect_generate(args: &[&str]) -> (String, String) {
    let dir = model_dir(FetchedModel::Smollm2).expect("run scripts/fetch_models.sh smollm2");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_inspect"))
        .args(["generate", "--checkpoint"])
        .arg(dir.join(FetchedModel::Smollm2.main_file()))
        .args(args)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

#[test]
fn inspect_generate_streams_the_reply_of_the_chat_template() {
    let run = |extra: &[&str]| inspect_generate(extra).0;
    let r = reference();
    assert_eq!(run(&["--prompt", &r.question]), format!("{}\n", r.reply));
    // A stop string ends the reply before it; --raw skips the template.
    assert_eq!(
        run(&["--prompt", &r.question, "--stop", " is"]),
        "The capital of France\n"
    );
    let raw = run(&[
        "--prompt",
        "The capital of France is",
        "--raw",
        "--max-new-tokens",
        "3",
    ]);
    assert!(
        !raw.trim().is_empty() && !raw.contains("<|im_start|>"),
        "{raw}"
    );
}

/// `--ignore-eos` generates every asked token past the reply's end, and the timings line
/// (issue #24) counts the prompt's and the generated tokens as llama.cpp does.
#[test]
fn inspect_generate_ignores_the_end_and_ends_with_a_timings_line() {
    let run = |extra: &[&str]| {
        let asked = [
            "--prompt",
            "What is the capital of France?",
            "--max-new-tokens",
            "40",
        ];
        inspect_generate(&[&asked[..], extra].concat()).1
    };
    let timings = |stderr: &str| -> (usize, usize) {
        let line = stderr.lines().last().unwrap_or_default().to_string();
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        // timings: prompt N tokens at R tokens/s, generated M tokens at R tokens/s, peak RSS S MB
        assert!(
            line.starts_with("timings: prompt ")
                && words.len() == 17
                && words[6] == "tokens/s"
                && words[7] == "generated"
                && words[12] == "tokens/s"
                && words[13..15] == ["peak", "RSS"]
                && words[16] == "MB",
            "{line}"
        );
        for i in [5, 11, 15] {
            assert!(words[i].parse::<f64>().expect("a number") > 0.0, "{line}");
        }
        let count = |i: usize| words[i].parse::<usize>().expect("a count");
        (count(2), count(8))
    };
    // The chat template's end marker stops a short reply early ...
    let (prompt, short) = timings(&run(&[]));
    assert!(prompt > 3 && short < 40, "{prompt} {short}");
    // ... unless the end is ignored.
    let (same, all) = timings(&run(&["--ignore-eos"]));
    assert_eq!((same, all), (prompt, 40));
}
