//! The fine-tuning task builders on small annotation files: AVA's votes become the mean
//! opinion score ("6.5") and Q-Align's level word, AVA-Captions' comments are answers,
//! FLICKR-AES gives k of one rater's scored photos before the query, LLaVA conversations
//! (several images included) pass as they are; a stage's mix is deterministic and follows its
//! ratios; the `finetune:` YAML reads and rejects unknown keys.

use std::path::{Path, PathBuf};

use calm::data::instruct::{
    InstructSample, LEVELS, SampleImage, Task, format_score, level_of, prompts,
};
use calm::data::tasks::{
    AvaCaptionsTask, AvaScoresTask, FlickrAesTask, LlavaTask, Mix, MixEntry, ScoreAnswers,
    TaskBuilder, TaskSourceConfig, build_task,
};
use calm::model::chat::Role;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn build(config: TaskSourceConfig) -> Box<dyn TaskBuilder> {
    build_task(&config)
        .expect("builds")
        .expect("an annotated task")
}

fn path_of(image: &SampleImage) -> PathBuf {
    match image {
        SampleImage::Path(p) => p.clone(),
        other => panic!("expected a file, got {other:?}"),
    }
}

fn answer(sample: &InstructSample) -> &str {
    let (role, text) = sample.turns.last().expect("turns");
    assert_eq!(*role, Role::Assistant);
    text
}

#[test]
fn ava_votes_become_scores_and_level_words() {
    let b = build(TaskSourceConfig::AvaScores(AvaScoresTask {
        ava_txt: fixture("ava/AVA.txt"),
        images: PathBuf::from("imgs"),
        split_list: None,
        answers: ScoreAnswers::Both,
    }));
    let n = b.len() / 2;
    assert!(n >= 4, "{n} images");
    // Image 953619: votes 0 1 5 17 38 36 15 6 5 1 for scores 1..10.
    let votes = [0.0, 1.0, 5.0, 17.0, 38.0, 36.0, 15.0, 6.0, 5.0, 1.0];
    let total: f64 = votes.iter().sum();
    let mos: f64 = votes
        .iter()
        .enumerate()
        .map(|(i, v)| (i + 1) as f64 * v)
        .sum::<f64>()
        / total;
    let numeric = b.sample(0, 1).expect("sample");
    assert_eq!(numeric.task, Task::Scoring);
    assert_eq!(
        path_of(&numeric.images[0]),
        PathBuf::from("imgs/953619.jpg")
    );
    assert_eq!(numeric.turns[0].1, prompts::SCORE);
    assert_eq!(answer(&numeric), format_score(mos));
    // The score heads learn the votes themselves (issue #20, item 1).
    let target = numeric.score.expect("a score target");
    assert!((target.mean - mos).abs() < 1e-9);
    for (p, v) in target.distribution.iter().zip(votes) {
        assert!(
            (f64::from(*p) - v / total).abs() < 1e-6,
            "{p} vs {}",
            v / total
        );
    }
    let words = b.sample(n, 1).expect("sample");
    assert_eq!(words.task, Task::ScoringLevels);
    assert_eq!(answer(&words), LEVELS[level_of(mos)]);
    assert_eq!(words.score, numeric.score);
    for i in 0..b.len() {
        let s = b.sample(i, 3).expect("sample");
        assert_eq!(s.images.len(), 1);
        assert_eq!(s.turns[0].1.matches("<image>").count(), 1);
    }
    // The official split keeps only its ids.
    let test = build(TaskSourceConfig::AvaScores(AvaScoresTask {
        ava_txt: fixture("ava/AVA.txt"),
        images: PathBuf::from("imgs"),
        split_list: Some(fixture("ava/generic_test.jpgl")),
        answers: ScoreAnswers::Numeric,
    }));
    assert_eq!(test.len(), 2);
    let ids: Vec<PathBuf> = (0..2)
        .map(|i| path_of(&test.sample(i, 0).expect("sample").images[0]))
        .collect();
    assert_eq!(
        ids,
        [
            PathBuf::from("imgs/953958.jpg"),
            PathBuf::from("imgs/954113.jpg")
        ]
    );
}

#[test]
fn ava_captions_answer_with_one_of_the_image_comments() {
    let b = build(TaskSourceConfig::AvaCaptions(AvaCaptionsTask {
        json: fixture("ava_captions/ava_captions.json"),
        images: PathBuf::from("imgs"),
        split: Some(calm::data::CaptionSplit::Train),
    }));
    let comments = [
        "Nice colours, but the horizon is tilted.",
        "Too dark for my taste.",
    ];
    let mut seen = std::collections::HashSet::new();
    for seed in 0..20 {
        let s = b.sample(0, seed).expect("sample");
        assert_eq!(s.task, Task::Commenting);
        assert_eq!(path_of(&s.images[0]), PathBuf::from("imgs/953619.jpg"));
        assert!(comments.contains(&answer(&s)), "{}", answer(&s));
        seen.insert(answer(&s).to_string());
    }
    assert_eq!(seen.len(), 2, "the seed chooses among the comments");
    // The test split's image is not among the training items.
    for i in 0..b.len() {
        let s = b.sample(i, 0).expect("sample");
        assert_ne!(path_of(&s.images[0]), PathBuf::from("imgs/953958.jpg"));
    }
}

fn flickr(dir: &Path, shots: usize) -> Result<Box<dyn TaskBuilder>, calm::data::DataError> {
    let mut csv = String::from("worker,imagePair,score\n");
    for i in 0..6 {
        csv.push_str(&format!("W1,w1_{i}.jpg,{}\n", 1 + i % 5));
    }
    for i in 0..2 {
        csv.push_str(&format!("W2,w2_{i}.jpg,3\n"));
    }
    let path = dir.join("ratings.csv");
    std::fs::write(&path, csv).expect("write");
    build_task(&TaskSourceConfig::FlickrAes(FlickrAesTask {
        csv: path,
        images: PathBuf::from("imgs"),
        shots,
        workers: None,
    }))
    .map(|b| b.expect("an annotated task"))
}

#[test]
fn flickr_aes_puts_one_raters_examples_before_the_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = 3;
    let b = flickr(dir.path(), k).expect("builds");
    // W2 has 2 ratings, too few for 3 shots plus a query: only W1's 6 queries remain.
    assert_eq!(b.len(), 6);
    let scores: std::collections::HashMap<String, String> = (0..6)
        .map(|i| (format!("imgs/w1_{i}.jpg"), (1 + i % 5).to_string()))
        .collect();
    for index in 0..6 {
        let s = b.sample(index, 9).expect("sample");
        assert_eq!(s.task, Task::Personalized);
        assert_eq!(s.images.len(), k + 1);
        assert_eq!(s.turns.len(), 2 * k + 2);
        let paths: Vec<String> = s
            .images
            .iter()
            .map(|i| path_of(i).display().to_string())
            .collect();
        let query = paths.last().expect("query");
        assert!(
            !paths[..k].contains(query),
            "the query is among its examples"
        );
        for (i, path) in paths.iter().enumerate() {
            assert!(path.starts_with("imgs/w1_"), "{path} is another rater's");
            assert_eq!(s.turns[2 * i].0, Role::User);
            assert_eq!(s.turns[2 * i].1, prompts::PERSONAL_EXAMPLE);
            assert_eq!(s.turns[2 * i + 1].1, scores[path], "{path}");
        }
    }
    let err = flickr(dir.path(), 6)
        .err()
        .expect("nobody has 7 ratings")
        .to_string();
    assert!(
        err.contains("ratings.csv") && err.contains("more than 6"),
        "{err}"
    );
}

#[test]
fn llava_conversations_pass_as_they_are_with_several_images() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("conv.json");
    std::fs::write(
        &json,
        r#"[
 {"id": "a", "image": "one.jpg", "conversations": [
   {"from": "human", "value": "What is this?"}, {"from": "gpt", "value": "A lake."}]},
 {"id": "b", "image": ["l.jpg", "r.jpg"], "conversations": [
   {"from": "human", "value": "<image>\nLeft, and <image> right: which is better?"},
   {"from": "gpt", "value": "The left one."},
   {"from": "human", "value": "Why?"}, {"from": "gpt", "value": "Its horizon is level."}]}
]"#,
    )
    .expect("write");
    let b = build(TaskSourceConfig::Llava(LlavaTask {
        json: json.clone(),
        images: PathBuf::from("imgs"),
    }));
    assert_eq!(b.len(), 2);
    let single = b.sample(0, 0).expect("sample");
    // A single image without a placeholder goes before the first question, as LLaVA does.
    assert_eq!(single.turns[0].1, "<image>\nWhat is this?");
    let multi = b.sample(1, 0).expect("sample");
    assert_eq!(multi.task, Task::Conversation);
    assert_eq!(
        multi.images.iter().map(path_of).collect::<Vec<_>>(),
        [PathBuf::from("imgs/l.jpg"), PathBuf::from("imgs/r.jpg")]
    );
    assert_eq!(multi.turns.len(), 4);
    assert_eq!(answer(&multi), "Its horizon is level.");
    std::fs::write(
        &json,
        r#"[{"id": "c", "image": ["l.jpg", "r.jpg"], "conversations": [
   {"from": "human", "value": "<image> only one"}, {"from": "gpt", "value": "?"}]}]"#,
    )
    .expect("write");
    let err = build_task(&TaskSourceConfig::Llava(LlavaTask {
        json,
        images: PathBuf::from("imgs"),
    }))
    .err()
    .expect("placeholders and images disagree")
    .to_string();
    assert!(
        err.contains("id `c`") && err.contains("placeholders"),
        "{err}"
    );
}

#[test]
fn a_mix_is_deterministic_and_follows_its_ratios() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scores = build(TaskSourceConfig::AvaScores(AvaScoresTask {
        ava_txt: fixture("ava/AVA.txt"),
        images: PathBuf::from("imgs"),
        split_list: None,
        answers: ScoreAnswers::Numeric,
    }));
    let personal = flickr(dir.path(), 2).expect("builds");
    let mix = Mix::new(vec![(scores, 3.0), (personal, 1.0)]).expect("mix");
    let n = 4000;
    let personal = (0..n)
        .filter(|&i| mix.sample(i, 1, 5).expect("sample").task == Task::Personalized)
        .count();
    let share = personal as f64 / n as f64;
    assert!((share - 0.25).abs() < 0.03, "personalized share {share}");
    for i in [0, 17, 999] {
        let (a, b) = (
            mix.sample(i, 1, 5).expect("a"),
            mix.sample(i, 1, 5).expect("b"),
        );
        assert_eq!(a.turns, b.turns);
        assert_eq!(a.images.len(), b.images.len());
    }
    let differs = (0..50)
        .any(|i| mix.sample(i, 1, 5).expect("a").turns != mix.sample(i, 1, 6).expect("b").turns);
    assert!(differs, "the seed changes the stream");
    // In groups (micro-batches) of 4, the task is drawn once a group, by the same ratio; the
    // items within a group still differ.
    let tasks: Vec<Task> = (0..n)
        .map(|i| mix.sample(i, 4, 5).expect("sample").task)
        .collect();
    assert!(tasks.chunks(4).all(|g| g.iter().all(|t| *t == g[0])));
    let share = tasks.iter().filter(|t| **t == Task::Personalized).count() as f64 / n as f64;
    assert!(
        (share - 0.25).abs() < 0.05,
        "personalized share in groups {share}"
    );
    let group: Vec<_> = (0..4)
        .map(|i| mix.sample(i, 4, 5).expect("sample").turns)
        .collect();
    assert!(group.iter().any(|t| *t != group[0]), "{group:?}");
}

#[test]
fn mix_entries_read_from_yaml_and_reject_unknown_keys() {
    let yaml = "
- ratio: 2.0
  task: {kind: ava_captions, json: c.json, images: imgs, split: train}
- ratio: 1.0
  task: {kind: flickr_aes, csv: r.csv, images: imgs, shots: 10}
- ratio: 1.0
  task: {kind: self_supervised, turns: 1}
";
    let entries: Vec<MixEntry> = serde_saphyr::from_str(yaml).expect("parses");
    assert_eq!(entries.len(), 3);
    assert!(matches!(&entries[1].task, TaskSourceConfig::FlickrAes(f) if f.shots == 10));
    let bad = "- ratio: 1.0\n  task: {kind: ava_captions, json: c.json, imgs: x}\n";
    let err = serde_saphyr::from_str::<Vec<MixEntry>>(bad)
        .expect_err("unknown key")
        .to_string();
    assert!(err.contains("imgs"), "{err}");
}

/// A comment on a good photo must state no defect; praise that shares a word with a defect
/// ("sharp", "colours") does not count, the wordings fine-tuning teaches for a defect do.
#[test]
fn a_stated_defect_is_one_of_the_taught_wordings() {
    use calm::data::degrade::Degradation;
    use calm::eval::tasks::states_defect;
    assert_eq!(
        states_defect("The photo is blurred."),
        Some(Degradation::Blur)
    );
    assert_eq!(
        states_defect("THE PICTURE IS TOO DARK, raise it."),
        Some(Degradation::Underexposure)
    );
    assert_eq!(
        states_defect("The photo has Blocky JPEG artefacts."),
        Some(Degradation::Jpeg)
    );
    for praise in [
        "The photo has sharp detail and vivid colours.",
        "It works well as it is.",
        "",
    ] {
        assert_eq!(states_defect(praise), None, "{praise}");
    }
}
