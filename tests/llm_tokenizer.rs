//! The LLaMA-2 / Vicuna tokenizer (`../shared/tokenizers/llama-2`, ids checked against an
//! independent implementation) gives exactly the listed ids, and the chat templates lay out a
//! conversation as Vicuna v1 and ChatML do.

use std::path::{Path, PathBuf};

use calm::io::tokenizer::load_tokenizer_json;
use calm::model::chat::{ChatTemplate, Role};

fn llama2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tokenizers/llama-2")
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

#[test]
fn the_llama2_tokenizer_gives_the_checked_ids() {
    let tok = load_tokenizer_json(&llama2()).expect("tokenizer");
    let cases: Vec<Case> = serde_json::from_str(
        &std::fs::read_to_string(llama2().join("expected_ids.json")).expect("expected ids"),
    )
    .expect("json");
    assert_eq!(cases.len(), 3);
    for case in &cases {
        assert_eq!(
            tok.encode(&case.text).expect("encode"),
            case.ids,
            "{:?}",
            case.text
        );
    }
    assert_eq!((tok.bos, tok.eos.as_slice()), (Some(1), &[2][..]));
    assert_eq!(tok.template, ChatTemplate::vicuna_v1());
    // BOS goes in front of a prompt; decoding drops it again.
    let ids = tok.encode_prompt(&cases[0].text).expect("encode");
    assert_eq!(ids[0], 1);
    assert_eq!(tok.decode(&ids).expect("decode"), cases[0].text);
}

#[test]
fn templates_lay_out_turns_as_the_models_were_tuned() {
    let turns = [
        (Role::User, "<image>\nCan you give me the aesthetic score?"),
        (Role::Assistant, "6.5."),
        (Role::User, "Why?"),
    ];
    assert_eq!(
        ChatTemplate::vicuna_v1().prompt(&turns),
        "A chat between a curious user and an artificial intelligence assistant. The assistant \
         gives helpful, detailed, and polite answers to the user's questions. USER: <image>\n\
         Can you give me the aesthetic score? ASSISTANT: 6.5.</s>USER: Why? ASSISTANT:"
    );
    assert_eq!(
        ChatTemplate::smollm2().prompt(&turns[..1]),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
         Face<|im_end|>\n<|im_start|>user\n<image>\nCan you give me the aesthetic score?\
         <|im_end|>\n<|im_start|>assistant\n"
    );
}
