//! Layered YAML configs: unknown keys, `extends:`, `--set`, validation, and every shipped file.

use std::path::{Path, PathBuf};

use calm::config::{ConfigError, Layers, Source, load};
use calm::experiment::ExperimentConfig;
use calm::model::{HiddenAct, VisionConfig};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write fixture");
    path
}

fn load_err(file: &Path, sets: &[&str]) -> ConfigError {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    match load::<ExperimentConfig>(Some(file), &sets) {
        Ok(_) => panic!("expected an error for {}", file.display()),
        Err(e) => e,
    }
}

#[test]
fn misspelt_key_names_key_file_and_nearest() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "base.yaml", "seed: 3\n");
    let file = write(
        dir.path(),
        "typo.yaml",
        "extends: base.yaml\ndata:\n  loader:\n    batch_sise: 16\n",
    );
    let err = load_err(&file, &[]);
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::UnknownKey { .. }), "{msg}");
    assert!(msg.contains("data.loader.batch_sise"), "{msg}");
    assert!(msg.contains("typo.yaml"), "{msg}");
    assert!(!msg.contains("base.yaml"), "{msg}");
    assert!(msg.contains("`batch_size`"), "{msg}");
}

#[test]
fn misspelt_key_in_a_base_file_names_the_base() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "base.yaml",
        "model:\n  mfam:\n    qformer:\n      num_attention_head: 8\n",
    );
    let file = write(dir.path(), "top.yaml", "extends: [base.yaml]\nseed: 1\n");
    let msg = load_err(&file, &[]).to_string();
    assert!(
        msg.contains("model.mfam.qformer.num_attention_head"),
        "{msg}"
    );
    assert!(msg.contains("base.yaml"), "{msg}");
    assert!(msg.contains("`num_attention_heads`"), "{msg}");
}

#[test]
fn misspelt_key_in_set_names_the_set_argument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "ok.yaml", "seed: 1\n");
    let msg = load_err(&file, &["data.loader.num_workerz=4"]).to_string();
    assert!(msg.contains("--set data.loader.num_workerz=4"), "{msg}");
    assert!(msg.contains("`num_workers`"), "{msg}");
}

#[test]
fn misspelt_enum_value_suggests_the_variant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "v.yaml", "model:\n  vision:\n    kind: clipp\n");
    let msg = load_err(&file, &[]).to_string();
    assert!(
        msg.contains("unknown value `clipp`")
            && msg.contains("`clip`")
            && msg.contains("model.vision")
            && msg.contains("v.yaml"),
        "{msg}"
    );
}

#[test]
fn wrong_type_names_key_and_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "t.yaml",
        "data:\n  loader:\n    batch_size: many\n",
    );
    let err = load_err(&file, &[]);
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::InvalidValue { .. }), "{msg}");
    assert!(
        msg.contains("data.loader.batch_size") && msg.contains("t.yaml"),
        "{msg}"
    );
}

#[test]
fn extends_and_set_merge_in_documented_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "a.yaml",
        "seed: 1\ndata:\n  loader:\n    batch_size: 4\n    num_workers: 3\nmodel:\n  mfam:\n    low:\n      layers: [0, 1, 2]\n",
    );
    write(
        dir.path(),
        "b.yaml",
        "seed: 2\ndata:\n  loader:\n    shuffle: false\n",
    );
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    let top = write(
        &dir.path().join("sub"),
        "top.yaml",
        "extends: [../a.yaml, ../b.yaml]\ndata:\n  loader:\n    batch_size: 6\nmodel:\n  mfam:\n    low:\n      layers: [3]\n",
    );
    let sets = vec![
        "data.loader.batch_size=12".to_string(),
        "model.mfam.high.num_query_tokens=8".to_string(),
    ];
    let config: ExperimentConfig = load(Some(&top), &sets).expect("loads");
    // Later bases override earlier ones; the file overrides its bases; --set overrides all.
    assert_eq!(config.seed, 2);
    assert_eq!(config.data.loader.batch_size, 12);
    // Maps merge key by key: a's num_workers survives b, top and --set.
    assert_eq!(config.data.loader.num_workers, 3);
    assert!(!config.data.loader.shuffle);
    // Lists replace rather than concatenate.
    assert_eq!(config.model.mfam.low.layers, vec![3]);
    assert_eq!(config.model.mfam.high.num_query_tokens, 8);
    // Untouched keys keep the built-in defaults.
    assert_eq!(
        config.model.mfam.middle,
        ExperimentConfig::default().model.mfam.middle
    );
}

#[test]
fn sources_are_tracked_per_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "f.yaml", "seed: 5\n");
    let mut layers = Layers::from_defaults::<ExperimentConfig>().expect("defaults");
    layers.merge_file(&file).expect("file");
    layers.merge_set("data.loader.batch_size=2").expect("set");
    assert_eq!(layers.source_of("seed"), Source::File(file.clone()));
    assert_eq!(
        layers.source_of("data.loader.batch_size"),
        Source::Set("data.loader.batch_size=2".into())
    );
    assert_eq!(layers.source_of("data.loader.shuffle"), Source::Defaults);
}

#[test]
fn switching_a_tagged_section_drops_the_old_variants_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "clip.yaml",
        "model:\n  vision:\n    kind: clip\n    num_hidden_layers: 4\n    hidden_size: 64\n    num_attention_heads: 4\n    hidden_act: gelu\n    image_size: 32\n    patch_size: 8\n  mfam:\n    low: {layers: [1]}\n    middle: {layers: [2]}\n    high: {layers: [4]}\n",
    );
    let config: ExperimentConfig = load(Some(&file), &[]).expect("loads");
    match config.model.vision {
        VisionConfig::Clip(c) => {
            assert_eq!(c.num_hidden_layers, 4);
            assert_eq!(c.hidden_act, HiddenAct::Gelu);
            assert_eq!(
                c.intermediate_size, 4096,
                "unset fields take the variant's defaults"
            );
        }
        other => panic!("expected clip, got {other:?}"),
    }
}

#[test]
fn set_values_are_typed_as_yaml() {
    let sets: Vec<String> = [
        "seed=7",
        "model.mfam.low.layers=[0, 2]",
        "model.mfam.thematic.enabled=false",
        "data.image.crop=random",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let config: ExperimentConfig = load(None, &sets).expect("loads");
    assert_eq!(config.seed, 7);
    assert_eq!(config.model.mfam.low.layers, vec![0, 2]);
    assert!(!config.model.mfam.thematic.enabled);
    assert_eq!(config.data.image.crop, calm::data::Crop::Random);
    for bad in ["seed", "=3", "a..b=1"] {
        let err = load::<ExperimentConfig>(None, &[bad.to_string()]).expect_err(bad);
        assert!(matches!(err, ConfigError::BadSet { .. }), "{bad}: {err}");
    }
}

#[test]
fn validate_rejects_inconsistent_values_and_names_the_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let heads = write(
        dir.path(),
        "heads.yaml",
        "model:\n  mfam:\n    qformer:\n      num_attention_heads: 7\n",
    );
    let msg = load_err(&heads, &[]).to_string();
    assert!(
        msg.contains("num_attention_heads")
            && msg.contains("not divisible")
            && msg.contains("heads.yaml"),
        "{msg}"
    );

    let layers = write(
        dir.path(),
        "layers.yaml",
        "model:\n  mfam:\n    high:\n      layers: [5, 7]\n",
    );
    let msg = load_err(&layers, &[]).to_string();
    assert!(
        msg.contains("model.mfam.high.layers")
            && msg.contains("layer id 7")
            && msg.contains("layers.yaml"),
        "{msg}"
    );

    // With a 24-layer CLIP, hidden states 0..=24 exist, so layer 24 is valid and 25 is not.
    let clip = write(
        dir.path(),
        "clip.yaml",
        "model:\n  vision:\n    kind: clip\n  mfam:\n    high:\n      layers: [24]\n",
    );
    load::<ExperimentConfig>(Some(&clip), &[]).expect("layer 24 of ViT-L is valid");
    let msg = load_err(&clip, &["model.mfam.high.layers=[25]"]).to_string();
    assert!(msg.contains("--set model.mfam.high.layers=[25]"), "{msg}");
    let msg = load::<ExperimentConfig>(None, &["data.image.resize_shorter=200".to_string()])
        .expect_err("a 200px resize cannot give a 224px crop")
        .to_string();
    assert!(
        msg.contains("data.image.resize_shorter") && msg.contains("224px"),
        "{msg}"
    );

    let stage = write(
        dir.path(),
        "stage.yaml",
        "finetune:\n  stages:\n    - mfam_lr_scale: 0.0\n",
    );
    let msg = load_err(&stage, &[]).to_string();
    assert!(
        msg.contains("finetune.stages[0].mfam_lr_scale") && msg.contains("positive"),
        "{msg}"
    );
    for (set, key) in [
        (
            "finetune.projector_init={kind: least_squares, ridge: 0.0}",
            "finetune.projector_init.ridge",
        ),
        (
            "finetune.projector_init={kind: least_squares, batches: 0}",
            "finetune.projector_init.batches",
        ),
    ] {
        let msg = load::<ExperimentConfig>(None, &[set.to_string()])
            .expect_err(set)
            .to_string();
        assert!(msg.contains(key), "{msg}");
    }
    // A random start needs neither.
    load::<ExperimentConfig>(
        None,
        &["finetune.projector_init={kind: random, batches: 0}".to_string()],
    )
    .expect("random init ignores batches");
    let questions = write(
        dir.path(),
        "questions.yaml",
        "finetune:\n  stages:\n    - mix:\n        - ratio: 1.0\n          task: {kind: self_supervised, questions: 0}\n",
    );
    let msg = load_err(&questions, &[]).to_string();
    assert!(
        msg.contains("finetune.stages[0].mix[0].task") && msg.contains("one question"),
        "{msg}"
    );
    // A stage that names `trainable` names all three parts: filled in from a default, a
    // partial one would train other parts than its writer meant.
    let msg = load::<ExperimentConfig>(
        None,
        &["finetune.stages=[{trainable: {llm: full}}]".to_string()],
    )
    .expect_err("a partial trainable")
    .to_string();
    assert!(msg.contains("trainable") && msg.contains("mfam"), "{msg}");
}

#[test]
fn extends_cycles_and_bad_files_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "x.yaml", "extends: y.yaml\n");
    let y = write(dir.path(), "y.yaml", "extends: x.yaml\n");
    assert!(matches!(
        load_err(&y, &[]),
        ConfigError::ExtendsCycle { .. }
    ));
    let list = write(dir.path(), "list.yaml", "- a\n- b\n");
    assert!(matches!(
        load_err(&list, &[]),
        ConfigError::NotAMapping { .. }
    ));
    let broken = write(dir.path(), "broken.yaml", "seed: [1, 2\n");
    assert!(matches!(load_err(&broken, &[]), ConfigError::Parse { .. }));
    let dup = write(dir.path(), "dup.yaml", "seed: 1\nseed: 2\n");
    assert!(
        matches!(load_err(&dup, &[]), ConfigError::Parse { .. }),
        "duplicate keys are errors"
    );
    let missing = dir.path().join("nope.yaml");
    assert!(matches!(load_err(&missing, &[]), ConfigError::Read { .. }));
}

#[test]
fn every_shipped_config_loads_and_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut pending = vec![root];
    let mut count = 0;
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("configs dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                load::<ExperimentConfig>(Some(&path), &[]).unwrap_or_else(|e| panic!("{e}"));
                count += 1;
            }
        }
    }
    assert!(count >= 7, "expected the shipped configs, found {count}");
}

#[test]
fn resolved_yaml_round_trips() {
    let config: ExperimentConfig = load(
        None,
        &[
            "model.vision.kind=clip".into(),
            "model.mfam.low.layers=[2, 4]".into(),
        ],
    )
    .expect("loads");
    let yaml = calm::config::to_yaml(&config).expect("yaml");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "resolved.yaml", &yaml);
    let again: ExperimentConfig = load(Some(&file), &[]).expect("reloads");
    assert_eq!(again, config);
}

#[test]
fn errors_inside_kind_sections_name_the_inner_key_and_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "base.yaml",
        "model:\n  vision:\n    kind: clip\n    hidden_size: many\n",
    );
    let top = write(dir.path(), "top.yaml", "extends: base.yaml\n");
    let err = load_err(&top, &["model.vision.image_size=224"]);
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::InvalidValue { .. }), "{msg}");
    assert!(
        msg.contains("`model.vision.hidden_size`") && msg.contains("base.yaml"),
        "{msg}"
    );

    let typo = write(
        dir.path(),
        "typo.yaml",
        "data:\n  source:\n    kind: folder\n    pth: x\n",
    );
    let msg = load_err(&typo, &[]).to_string();
    assert!(
        msg.contains("unknown key `data.source.pth`")
            && msg.contains("typo.yaml")
            && msg.contains("`path`"),
        "{msg}"
    );

    let act = write(
        dir.path(),
        "act.yaml",
        "model:\n  vision:\n    kind: clip\n    hidden_act: gelux\n",
    );
    let msg = load_err(&act, &[]).to_string();
    assert!(
        msg.contains("`model.vision.hidden_act`") && msg.contains("nearest valid value: `gelu`"),
        "{msg}"
    );

    let kind = write(
        dir.path(),
        "kind.yaml",
        "data:\n  source:\n    kind: foldr\n",
    );
    let msg = load_err(&kind, &[]).to_string();
    assert!(
        msg.contains("`data.source.kind`") && msg.contains("`folder`") && msg.contains("kind.yaml"),
        "{msg}"
    );
}

#[test]
fn every_kind_round_trips_through_yaml() {
    use calm::data::SourceConfig;
    let sources = [
        "{kind: folder, path: p, recursive: true}",
        "{kind: list, path: l.txt}",
        "{kind: ava, ava_txt: a, images: i, split_list: s}",
        "{kind: ava_captions, json: j, images: i, split: val}",
        "{kind: flickr_aes, csv: c, images: i}",
        "{kind: llava, json: j, images: i}",
    ];
    for text in sources {
        let set = format!("data.source={text}");
        let config: ExperimentConfig = load(None, std::slice::from_ref(&set)).expect(&set);
        let yaml = calm::config::to_yaml(&config.data.source).expect("yaml");
        let kind = text
            .split(',')
            .next()
            .unwrap_or_default()
            .trim_start_matches("{kind: ");
        assert!(yaml.contains(&format!("kind: {kind}")), "{yaml}");
        let back: SourceConfig = serde_saphyr::from_str(&yaml).expect("reads back");
        assert_eq!(back, config.data.source, "{text}");
    }
    for vision in [
        "{kind: efficientnet_lite0, image_size: 256}",
        "{kind: clip, image_size: 224, patch_size: 16}",
    ] {
        let config: ExperimentConfig = load(
            None,
            &[
                format!("model.vision={vision}"),
                "model.mfam.high.layers=[6]".into(),
            ],
        )
        .expect(vision);
        let yaml = calm::config::to_yaml(&config.model.vision).expect("yaml");
        let back: VisionConfig = serde_saphyr::from_str(&yaml).expect("reads back");
        assert_eq!(back, config.model.vision, "{vision}");
    }
}

#[test]
fn mfam_knobs_are_validated_and_misspelt_choices_suggest_the_variant() {
    for (set, key) in [
        ("model.mfam.llm_hidden_size=0", "model.mfam.llm_hidden_size"),
        (
            "model.mfam.qformer.num_hidden_layers=0",
            "model.mfam.qformer.num_hidden_layers",
        ),
        (
            "model.mfam.qformer.cross_attention_frequency=0",
            "model.mfam.qformer.cross_attention_frequency",
        ),
    ] {
        let msg = load::<ExperimentConfig>(None, &[set.to_string()])
            .expect_err(set)
            .to_string();
        assert!(msg.contains(key) && msg.contains(set), "{msg}");
    }
    let msg = load::<ExperimentConfig>(None, &["model.mfam.qformer_weights=shard".to_string()])
        .expect_err("misspelt")
        .to_string();
    assert!(msg.contains("shared"), "{msg}");
}

#[test]
fn each_ablation_config_builds_the_mfam_it_describes() {
    use burn::tensor::Device;
    use calm::model::Group;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/model/ablations");
    let device = Device::flex();
    let lengths = |name: &str| {
        let config: ExperimentConfig =
            load(Some(&dir.join(name)), &[]).unwrap_or_else(|e| panic!("{e}"));
        let (vision, mfam) = (&config.model.vision, &config.model.mfam);
        let built = mfam.init(vision, &device);
        let branches = [&built.low, &built.middle, &built.high].map(|b| b.is_some());
        (
            mfam.group_lengths(vision),
            branches,
            built.qformer.is_some(),
        )
    };
    // EfficientNet-Lite0 at 224 px: the last stage is 7 x 7, pooled to 2 x 2 by default, and
    // each level's 16 queries to 4 tokens.
    assert_eq!(
        lengths("no_thematic.yaml").0,
        [
            (Group::Low, 4),
            (Group::Middle, 4),
            (Group::High, 4),
            (Group::Thematic, 0)
        ]
    );
    let (high_only, branches, _) = lengths("high_only.yaml");
    assert_eq!(
        high_only,
        [
            (Group::Low, 0),
            (Group::Middle, 0),
            (Group::High, 12),
            (Group::Thematic, 4)
        ]
    );
    assert_eq!(branches, [false, false, true]);
    assert!(lengths("shared_qformer.yaml").2);
    assert!(!lengths("cross_attention_every_layer.yaml").2);
}

#[test]
fn a_diamond_of_extends_is_refused_after_a_bounded_number_of_files() {
    // Each level names the one below twice: 2^30 reads if nothing counted them.
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "l0.yaml", "seed: 1\n");
    for i in 1..=30 {
        let below = format!("l{}.yaml", i - 1);
        write(
            dir.path(),
            &format!("l{i}.yaml"),
            &format!("extends: [{below}, {below}]\n"),
        );
    }
    let start = std::time::Instant::now();
    let top = dir.path().join("l30.yaml");
    let err = load_err(&top, &[]);
    assert!(matches!(err, ConfigError::TooManyFiles { .. }), "{err}");
    assert!(err.to_string().contains("l30.yaml"), "{err}");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    // A few levels of the same diamond are fine: a base named twice is merged twice.
    let small = dir.path().join("l3.yaml");
    let config = load::<ExperimentConfig>(Some(&small), &[]).expect("8 reads load");
    assert_eq!(config.seed, 1);
}
