//! Annotation readers on small fixtures written in the real formats, and their errors.

use std::path::{Path, PathBuf};

use calm::data::formats::{ava, ava_captions, flickr_aes, llava};
use calm::data::{CaptionSplit, DataError, SourceConfig};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write fixture");
    path
}

#[test]
fn ava_txt_records_scores_and_distributions() {
    let records = ava::read_ava_txt(&fixture("ava/AVA.txt")).expect("parses");
    assert_eq!(records.len(), 4);
    let r = &records[0];
    assert_eq!(
        (r.index, r.image_id, r.tags, r.challenge),
        (1, 953619, [1, 22], 1396)
    );
    assert_eq!(r.votes, [0, 1, 5, 17, 38, 36, 15, 6, 5, 1]);
    assert_eq!(r.num_votes(), 124);
    // (2*1 + 3*5 + 4*17 + 5*38 + 6*36 + 7*15 + 8*6 + 9*5 + 10*1) / 124 = 699 / 124
    let mean = r.mean_score().expect("has votes");
    assert!((mean - 699.0 / 124.0).abs() < 1e-12, "{mean}");
    let dist = r.distribution().expect("has votes");
    assert!((dist.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert_eq!(records[2].tags, [0, 0]);
    assert_eq!(
        r.image_path(Path::new("imgs")),
        PathBuf::from("imgs/953619.jpg")
    );
}

#[test]
fn ava_split_list_selects_images() {
    let ids = ava::read_id_list(&fixture("ava/generic_test.jpgl")).expect("parses");
    assert_eq!(ids, vec![953958, 954113]);
    let source: SourceConfig = serde_json::from_value(serde_json::json!({
        "kind": "ava",
        "ava_txt": fixture("ava/AVA.txt"),
        "images": "imgs",
        "split_list": fixture("ava/generic_test.jpgl"),
    }))
    .expect("source config");
    let paths = source.image_paths().expect("paths");
    assert_eq!(
        paths,
        vec![
            PathBuf::from("imgs/953958.jpg"),
            PathBuf::from("imgs/954113.jpg")
        ]
    );
}

#[test]
fn malformed_ava_line_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let short = write(
        dir.path(),
        "AVA.txt",
        "1 953619 0 1 5 17 38 36 15 6 5 1 1 22 1396\n2 953958 10 7 15\n",
    );
    match ava::read_ava_txt(&short) {
        Err(DataError::Malformed {
            path,
            line,
            message,
        }) => {
            assert_eq!((path, line), (short.clone(), 2));
            assert!(message.contains("expected 15 fields"), "{message}");
        }
        other => panic!("expected a malformed-line error, got {other:?}"),
    }
    let text = write(
        dir.path(),
        "AVA2.txt",
        "\n1 953619 0 1 5 17 38 36 15 6 5 1 1 22 x\n",
    );
    let err = ava::read_ava_txt(&text).expect_err("bad field");
    assert!(
        err.to_string().contains("AVA2.txt, line 2") && err.to_string().contains("`x`"),
        "{err}"
    );
    let ids = write(dir.path(), "ids.jpgl", "953958\nabc\n");
    let err = ava::read_id_list(&ids).expect_err("bad id");
    assert!(err.to_string().contains("ids.jpgl, line 2"), "{err}");
}

#[test]
fn ava_captions_json_reads_sentences_and_splits() {
    let images = ava_captions::read_ava_captions(&fixture("ava_captions/ava_captions.json"))
        .expect("parses");
    assert_eq!(images.len(), 2);
    assert_eq!(images[0].filename, "953619.jpg");
    assert_eq!(images[0].split, CaptionSplit::Train);
    assert_eq!(
        images[0].captions,
        vec![
            "Nice colours, but the horizon is tilted.",
            "Too dark for my taste."
        ]
    );
    assert_eq!(images[1].split, CaptionSplit::Test);
    let source: SourceConfig = serde_json::from_value(serde_json::json!({
        "kind": "ava_captions", "json": fixture("ava_captions/ava_captions.json"), "images": "x", "split": "test",
    }))
    .expect("source config");
    assert_eq!(
        source.image_paths().expect("paths"),
        vec![PathBuf::from("x/953958.jpg")]
    );
}

#[test]
fn malformed_caption_json_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = write(
        dir.path(),
        "caps.json",
        "{\"images\": [\n {\"filename\": \"a.jpg\", \"split\": \"dev\", \"sentences\": []}\n]}\n",
    );
    let err = ava_captions::read_ava_captions(&bad).expect_err("unknown split");
    let msg = err.to_string();
    assert!(
        msg.contains("caps.json, line 2") && msg.contains("dev"),
        "{msg}"
    );
}

#[test]
fn flickr_aes_csv_reads_worker_ratings() {
    let ratings = flickr_aes::read_flickr_aes(&fixture(
        "flickr_aes/FLICKR-AES_image_labeled_by_each_worker.csv",
    ))
    .expect("parses");
    assert_eq!(ratings.len(), 4);
    assert_eq!(ratings[0].worker, "A1CZ6UHZZ5S4SN");
    assert_eq!(ratings[0].image, "farm1_281_19837794283_5d7ad1ad89_b.jpg");
    assert_eq!(ratings[0].score, 3.0);
    assert_eq!(ratings[3].score, 5.0);
    let source: SourceConfig = serde_json::from_value(serde_json::json!({
        "kind": "flickr_aes",
        "csv": fixture("flickr_aes/FLICKR-AES_image_labeled_by_each_worker.csv"),
        "images": "f",
    }))
    .expect("source config");
    assert_eq!(
        source.image_paths().expect("paths").len(),
        3,
        "images rated twice appear once"
    );
}

#[test]
fn malformed_flickr_rows_name_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_of_range = write(
        dir.path(),
        "r.csv",
        "worker,imagePair,score\nW1,a.jpg,4\nW1,b.jpg,9\n",
    );
    let msg = flickr_aes::read_flickr_aes(&out_of_range)
        .expect_err("score 9")
        .to_string();
    assert!(
        msg.contains("r.csv, line 3") && msg.contains("outside 1..5"),
        "{msg}"
    );
    let missing = write(dir.path(), "m.csv", "worker,imagePair,score\nW1,a.jpg\n");
    let msg = flickr_aes::read_flickr_aes(&missing)
        .expect_err("missing score")
        .to_string();
    assert!(
        msg.contains("m.csv, line 2") && msg.contains("missing score"),
        "{msg}"
    );
    let header = write(dir.path(), "h.csv", "who,what\nW1,a.jpg\n");
    let msg = flickr_aes::read_flickr_aes(&header)
        .expect_err("bad header")
        .to_string();
    assert!(msg.contains("h.csv, line 1"), "{msg}");
}

#[test]
fn llava_json_reads_roles_and_images() {
    let samples = llava::read_llava(&fixture("llava/conversations.json")).expect("parses");
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0].images, vec!["coco/train2017/000000033471.jpg"]);
    assert_eq!(samples[0].turns.len(), 4);
    assert_eq!(samples[0].turns[0].role, llava::Role::User);
    assert_eq!(samples[0].turns[1].role, llava::Role::Assistant);
    assert_eq!(samples[0].turns[1].text, "6.5.");
    assert_eq!(samples[1].id, "7");
    assert!(samples[1].images.is_empty());
}

#[test]
fn malformed_llava_samples_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let role = write(
        dir.path(),
        "r.json",
        "[\n{\"id\": \"a\", \"conversations\": [\n{\"from\": \"robot\", \"value\": \"hi\"}]}\n]\n",
    );
    let msg = llava::read_llava(&role)
        .expect_err("unknown role")
        .to_string();
    assert!(
        msg.contains("r.json, line 3") && msg.contains("robot"),
        "{msg}"
    );
    let no_image = write(
        dir.path(),
        "n.json",
        "[{\"id\": \"b\", \"conversations\": [{\"from\": \"human\", \"value\": \"<image> score?\"}]}]",
    );
    let msg = llava::read_llava(&no_image)
        .expect_err("<image> without image")
        .to_string();
    assert!(
        msg.contains("n.json") && msg.contains("sample 0 (id `b`)"),
        "{msg}"
    );
    let two = write(
        dir.path(),
        "m.json",
        "[{\"id\": \"c\", \"image\": [\"a.jpg\", \"b.jpg\"], \"conversations\": [{\"from\": \"human\", \"value\": \"<image> vs <image>?\"}, {\"from\": \"gpt\", \"value\": \"the first\"}]}]",
    );
    let multi = llava::read_llava(&two).expect("multi-image sample");
    assert_eq!(multi[0].images, vec!["a.jpg", "b.jpg"]);
    let short = write(
        dir.path(),
        "s.json",
        "[{\"id\": \"d\", \"image\": [\"a.jpg\", \"b.jpg\"], \"conversations\": [{\"from\": \"human\", \"value\": \"<image> only one\"}]}]",
    );
    let msg = llava::read_llava(&short)
        .expect_err("two images, one placeholder")
        .to_string();
    assert!(msg.contains("1 <image> placeholders for 2 images"), "{msg}");
}
