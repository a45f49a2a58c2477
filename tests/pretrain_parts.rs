//! The pieces of the pretraining loop on their own: photo selection, the hold-out split,
//! global-norm clipping against a hand computation, gradients split between two learning
//! rates, checkpoints that restore optimiser state exactly, and the pretraining config (its
//! checks and the full-scale file).

mod common;

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use calm::config::load;
use calm::data::SourceConfig;
use calm::experiment::ExperimentConfig;
use calm::train::checkpoints::{self, TrainerState};
use calm::train::optim::{
    OptimizerConfig, OptimizerKind, clip_global_norm, global_grad_norm, move_grads, numbered_params,
};
use calm::train::pretrain::{HoldOut, micro_batch_photos, split_photos};

#[test]
fn each_epoch_shows_every_photo_once_and_batches_rebuild_from_their_index() {
    let (photos, batch) = (7, 3);
    let stream: Vec<usize> = (0..7)
        .flat_map(|i| micro_batch_photos(photos, batch, 5, i))
        .collect();
    for epoch in stream.chunks(photos).take(3) {
        let mut sorted = epoch.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..photos).collect::<Vec<_>>());
    }
    assert_ne!(stream[..photos], stream[photos..2 * photos], "reshuffled");
    assert_eq!(micro_batch_photos(photos, batch, 5, 4), stream[12..15]);
    assert_ne!(
        (0..7)
            .flat_map(|i| micro_batch_photos(photos, batch, 6, i))
            .collect::<Vec<_>>(),
        stream
    );
}

#[test]
fn the_hold_out_is_a_seeded_disjoint_draw() {
    let paths: Vec<PathBuf> = (0..10).map(|i| PathBuf::from(format!("p{i}"))).collect();
    let a = split_photos(paths.clone(), HoldOut::Count(3), 1).expect("split");
    assert_eq!((a.train.len(), a.held_out.len()), (7, 3));
    assert!(a.held_out.iter().all(|h| !a.train.contains(h)));
    assert_eq!(
        a,
        split_photos(paths.clone(), HoldOut::Count(3), 1).expect("split")
    );
    assert_ne!(
        a.held_out,
        split_photos(paths.clone(), HoldOut::Count(3), 2)
            .expect("split")
            .held_out
    );
    let err = split_photos(paths.clone(), HoldOut::Count(9), 1).expect_err("1 photo left");
    assert!(err.to_string().contains("10 photos found"), "{err}");
    // A share is of the photos found, rounded up: the default third holds out 4 of 10, 10 of
    // the 29 sample photos, 10 of 30 (not 11 by a rounding error), and always at least one.
    let share = HoldOut::default();
    let default = split_photos(paths.clone(), share, 1).expect("split");
    assert_eq!((default.train.len(), default.held_out.len()), (6, 4));
    assert_eq!((share.of(29), share.of(30), share.of(3)), (10, 10, 1));
    assert_eq!(HoldOut::Share(0.01).of(10), 1);
}

/// `pretrain.hold_out` reads as a count or a share; a share outside (0, 1) is refused by name.
#[test]
fn the_hold_out_reads_as_a_count_or_a_share() {
    let parse = |value: &str| {
        load::<ExperimentConfig>(None, &[format!("pretrain.hold_out={value}")])
            .map(|c| c.pretrain.hold_out)
    };
    assert_eq!(parse("5").expect("count"), HoldOut::Count(5));
    assert_eq!(parse("0.25").expect("share"), HoldOut::Share(0.25));
    for bad in ["1.5", "0.0", "-2", "0", "5.0"] {
        let err = parse(bad).expect_err(bad);
        assert!(
            err.to_string().contains("pretrain.hold_out"),
            "{bad}: {err}"
        );
    }
}

/// A Linear 2 -> 1 with gradients set by hand: weight [3, 4], bias [12].
fn linear_with_grads(device: &Device) -> (Linear, GradientsParams) {
    let linear = LinearConfig::new(2, 1).init(device);
    let mut grads = GradientsParams::new();
    grads.register(
        linear.weight.id,
        Tensor::<2>::from_data(TensorData::new(vec![3f32, 4.], [2, 1]), device),
    );
    let bias = linear.bias.as_ref().expect("bias");
    grads.register(
        bias.id,
        Tensor::<1>::from_data(TensorData::new(vec![12f32], [1]), device),
    );
    (linear, grads)
}

fn grad_values(linear: &Linear, grads: &GradientsParams) -> Vec<f32> {
    let mut v: Vec<f32> = grads
        .get::<2>(linear.weight.id)
        .expect("weight grad")
        .into_data()
        .iter::<f32>()
        .collect();
    let bias = linear.bias.as_ref().expect("bias");
    v.extend(
        grads
            .get::<1>(bias.id)
            .expect("bias grad")
            .into_data()
            .iter::<f32>(),
    );
    v
}

#[test]
fn clipping_scales_all_gradients_by_their_global_norm() {
    let device = Device::flex();
    // sqrt(3^2 + 4^2 + 12^2) = 13.
    let (linear, mut grads) = linear_with_grads(&device);
    assert!((global_grad_norm(&linear, &grads) - 13.0).abs() < 1e-6);
    let norm = clip_global_norm(&linear, &mut grads, 6.5);
    assert!((norm - 13.0).abs() < 1e-6);
    let scale = 6.5 / (13.0 + 1e-6);
    let want = [3.0 * scale, 4.0 * scale, 12.0 * scale];
    for (g, w) in grad_values(&linear, &grads).iter().zip(want) {
        assert!((f64::from(*g) - w).abs() < 1e-6, "{g} vs {w}");
    }
    // Under the limit nothing changes.
    let (linear, mut grads) = linear_with_grads(&device);
    clip_global_norm(&linear, &mut grads, 20.0);
    assert_eq!(grad_values(&linear, &grads), [3.0, 4.0, 12.0]);
}

/// Two layers, stepped with two learning rates as `finetune.stages[].mfam_lr_scale` does.
#[derive(Module, Debug)]
struct TwoLayers {
    a: Linear,
    b: Linear,
}

fn weights(linear: &Linear) -> Vec<f32> {
    linear.weight.val().into_data().iter::<f32>().collect()
}

#[test]
fn moved_gradients_step_with_their_own_learning_rate() {
    let device = Device::flex().autodiff();
    let model = TwoLayers {
        a: LinearConfig::new(3, 2).init(&device),
        b: LinearConfig::new(3, 2).init(&device),
    };
    let x = Tensor::<2>::from_data(TensorData::new(vec![0.5f32, -1.0, 2.0], [1, 3]), &device);
    let loss = (model.a.forward(x.clone()) + model.b.forward(x)).sum();
    let mut grads = GradientsParams::from_grads(loss.backward(), &model);
    assert_eq!(grads.len(), 4);
    let mut moved = GradientsParams::new();
    move_grads(&model.a, &mut grads, &mut moved);
    assert_eq!((moved.len(), grads.len()), (2, 2));
    assert!(grads.get::<2>(model.a.weight.id).is_none());
    let (a0, b0) = (weights(&model.a), weights(&model.b));
    let mut optimizer = OptimizerConfig::default().init();
    let model = optimizer.step(0.01, model, moved);
    let model = optimizer.step(0.1, model, grads);
    // Adam's first step moves every weight by its learning rate (times the gradient's sign).
    for (before, after, lr) in [(a0, weights(&model.a), 0.01), (b0, weights(&model.b), 0.1)] {
        for (w0, w1) in before.iter().zip(&after) {
            assert!(((w0 - w1).abs() - lr).abs() < 1e-4, "{w0} -> {w1}, lr {lr}");
        }
    }
}

#[test]
fn numbered_parameters_count_from_zero_in_visiting_order() {
    struct Ids(Vec<ParamId>);
    impl ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.id);
        }
    }
    let device = Device::flex();
    let model = numbered_params(LinearConfig::new(3, 2).init(&device));
    let mut ids = Ids(Vec::new());
    model.visit(&mut ids);
    assert_eq!(ids.0, [ParamId::from(0), ParamId::from(1)]);
}

/// One Adam step of `model` on the loss sum(model(x)^2).
fn train_step(model: Linear, optim: &mut burn::optim::ModuleOptimizer, x: &Tensor<2>) -> Linear {
    let loss = model.forward(x.clone()).powi_scalar(2).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    optim.step(1e-2, model, grads)
}

#[test]
fn a_checkpoint_restores_weights_and_optimiser_state_exactly() {
    let device = Device::flex().autodiff();
    let x = Tensor::<2>::from_data(
        TensorData::new(vec![0.5f32, -1.0, 2.0, 0.25, 1.5, -0.75], [2, 3]),
        &device,
    );
    for kind in [OptimizerKind::Adam, OptimizerKind::AdamW] {
        let config = OptimizerConfig {
            kind,
            weight_decay: 0.1,
            ..OptimizerConfig::default()
        };
        let mut model = numbered_params(LinearConfig::new(3, 2).init(&device));
        let mut optim = config.init();
        for _ in 0..3 {
            model = train_step(model, &mut optim, &x);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let state = TrainerState {
            step: 3,
            micro_batches: 3,
            skipped: vec!["bad.jpg: truncated".into()],
        };
        let saved = checkpoints::save(dir.path(), &model, &optim, &state, 0).expect("save");
        assert_eq!(
            checkpoints::latest(dir.path()).expect("latest"),
            Some(saved.clone())
        );

        // A fresh model (other weights, same numbering) and a fresh optimiser, as a new
        // process builds them, then the checkpoint.
        let mut restored = numbered_params(LinearConfig::new(3, 2).init(&device));
        let (mut restored_optim, restored_state) =
            checkpoints::load(&saved, &mut restored, config.init()).expect("load");
        assert_eq!(restored_state, state);
        assert_eq!(common::param_bits(&restored), common::param_bits(&model));
        // Adam's moments came back: the next steps agree bit for bit.
        for _ in 0..2 {
            model = train_step(model, &mut optim, &x);
            restored = train_step(restored, &mut restored_optim, &x);
        }
        assert_eq!(
            common::param_bits(&restored),
            common::param_bits(&model),
            "{kind:?}"
        );
        // Without the optimiser state the steps differ, so the check above can fail.
        let mut cold = numbered_params(LinearConfig::new(3, 2).init(&device));
        let (_, _) = checkpoints::load(&saved, &mut cold, config.init()).expect("load");
        let mut cold_optim = config.init();
        let mut warm = numbered_params(LinearConfig::new(3, 2).init(&device));
        let (mut warm_optim, _) =
            checkpoints::load(&saved, &mut warm, config.init()).expect("load");
        cold = train_step(cold, &mut cold_optim, &x);
        warm = train_step(warm, &mut warm_optim, &x);
        assert_ne!(common::param_bits(&cold), common::param_bits(&warm));
    }
}

#[test]
fn latest_only_ever_names_a_complete_checkpoint_and_old_ones_are_pruned() {
    let device = Device::flex();
    let model = numbered_params(LinearConfig::new(2, 2).init(&device));
    let optim = OptimizerConfig::default().init();
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(checkpoints::latest(dir.path()).expect("none"), None);
    for step in [2, 4, 6] {
        let state = TrainerState {
            step,
            micro_batches: step,
            skipped: Vec::new(),
        };
        checkpoints::save(dir.path(), &model, &optim, &state, 2).expect("save");
    }
    let root = dir.path().join("checkpoints");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["latest", "step-00000004", "step-00000006"]);
    // A crash while writing step 8 leaves a temporary folder; `latest` still names step 6.
    std::fs::create_dir(root.join(".step-00000008.999.tmp")).expect("mkdir");
    std::fs::write(
        root.join(".step-00000008.999.tmp/model.safetensors"),
        b"torn",
    )
    .expect("w");
    assert_eq!(
        checkpoints::latest(dir.path()).expect("latest"),
        Some(root.join("step-00000006"))
    );
    // A pointer to an incomplete folder is an error, not a silent fresh start.
    std::fs::write(root.join("latest"), "step-00000008\n").expect("w");
    let err = checkpoints::latest(dir.path()).expect_err("incomplete");
    assert!(
        err.to_string().contains("not a complete checkpoint"),
        "{err}"
    );
}

fn invalid(sets: &[&str]) -> String {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    load::<ExperimentConfig>(None, &sets)
        .expect_err("invalid")
        .to_string()
}

#[test]
fn pretraining_settings_are_checked() {
    for (sets, key) in [
        (vec!["pretrain.steps=0"], "pretrain.steps"),
        (
            vec!["pretrain.steps=5", "pretrain.schedule.warmup_steps=6"],
            "pretrain.schedule.warmup_steps",
        ),
        (
            vec!["pretrain.gradient_accumulation=0"],
            "pretrain.gradient_accumulation",
        ),
        (
            vec!["pretrain.optimizer.beta_2=1.0"],
            "pretrain.optimizer.beta_2",
        ),
        (vec!["pretrain.max_grad_norm=0"], "pretrain.max_grad_norm"),
        (
            vec!["pretrain.pairs.degradations=[]"],
            "pretrain.pairs.degradations",
        ),
        (
            vec!["pretrain.evaluation.severities=[1.5]"],
            "pretrain.evaluation.severities",
        ),
        (
            vec!["pretrain.losses.temperature=0"],
            "pretrain.losses.temperature",
        ),
        (
            vec![
                "pretrain.losses.itc_low=0",
                "pretrain.losses.itc_middle=0",
                "pretrain.losses.itc_high=0",
                "pretrain.losses.attributes=0",
                "pretrain.losses.ranking=0",
            ],
            "every weight is 0",
        ),
    ] {
        let err = invalid(&sets);
        assert!(err.contains(key), "{sets:?}: {err}");
    }
    let err = invalid(&["pretrain.optimizer.kind=adamww"]);
    assert!(err.contains("nearest valid value: `adamw`"), "{err}");
    let adamw: ExperimentConfig =
        load(None, &["pretrain.optimizer.kind=adamw".to_string()]).expect("adamw");
    assert_eq!(adamw.pretrain.optimizer.kind, OptimizerKind::AdamW);
    let err = invalid(&["data.extra_sources=[{kind: list}]"]);
    assert!(err.contains("data.extra_sources.0.path"), "{err}");
}

#[test]
fn the_full_scale_config_is_calms_setup() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/pretrain/calm_vitl14.yaml");
    let config: ExperimentConfig = load(Some(&path), &[]).expect("loads and validates");
    let calm::model::VisionConfig::Clip(clip) = &config.model.vision else {
        panic!("a CLIP encoder")
    };
    assert_eq!(
        (
            clip.hidden_size,
            clip.num_hidden_layers,
            clip.patch_size,
            clip.image_size
        ),
        (1024, 24, 14, 336)
    );
    // The eight unlabeled sources: AVA (its training list) and seven folders.
    assert!(matches!(&config.data.source, SourceConfig::Ava(a) if a.split_list.is_some()));
    assert_eq!(config.data.extra_sources.len(), 7);
    let p = &config.pretrain;
    assert_eq!(p.optimizer.kind, OptimizerKind::Adam);
    assert_eq!(p.schedule.peak_lr, 1e-3);
    assert!(p.schedule.warmup_steps > 0 && p.schedule.min_lr_ratio == 0.0);
    // Per-GPU batch of 32 photos; 8 accumulated micro-batches stand for the 8 GPUs.
    assert_eq!(
        (config.data.loader.batch_size, p.gradient_accumulation),
        (32, 8)
    );
    let q = &config.model.mfam.qformer;
    assert_eq!((q.hidden_size, q.num_hidden_layers), (768, 12));
    assert_eq!(config.model.mfam.low.num_query_tokens, 32);
    // Every query reaches the LLM at full scale, as in BLIP-2.
    for level in [
        &config.model.mfam.low,
        &config.model.mfam.middle,
        &config.model.mfam.high,
    ] {
        assert_eq!(level.pool, None);
    }
    assert_eq!(config.model.mfam.llm_hidden_size, 4096);
}

/// Issue #19, item 2: Q-Formers copied from one BERT must each get their own gradient. Their
/// parameters once shared the BERT tensors' autodiff nodes, so the first Q-Former took the
/// summed gradient and the other two none at the first step.
#[test]
fn every_qformer_copied_from_one_bert_gets_its_own_gradient() {
    let device = Device::flex().autodiff();
    device.seed(3);
    let (mfam_config, vision, _) = common::tiny_pretrain_configs();
    let q = &mfam_config.qformer;
    let bert = calm::model::BertConfig {
        vocab_size: 10,
        hidden_size: q.hidden_size,
        num_hidden_layers: q.num_hidden_layers,
        num_attention_heads: q.num_attention_heads,
        intermediate_size: q.intermediate_size,
        max_position_embeddings: 8,
        ..calm::model::BertConfig::default()
    }
    .init(false, &device);
    let mfam = numbered_params(
        mfam_config
            .init_from_bert(&vision, &bert, &device)
            .expect("from BERT"),
    );
    let hidden_states: Vec<Tensor<3>> = vision
        .hidden_state_shapes()
        .into_iter()
        .map(|(t, w)| Tensor::random([2, t, w], burn::tensor::Distribution::Default, &device))
        .collect();
    let loss = mfam.forward(&hidden_states).tokens().powi_scalar(2).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &mfam);
    struct Count<'a> {
        grads: &'a GradientsParams,
        with: usize,
        without: Vec<u64>,
    }
    impl ModuleVisitor for Count<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            match self.grads.get::<D>(param.id) {
                Some(_) => self.with += 1,
                None => self.without.push(param.id.val()),
            }
        }
    }
    let mut count = Count {
        grads: &grads,
        with: 0,
        without: Vec::new(),
    };
    mfam.visit(&mut count);
    assert!(count.with > 60, "{} parameters", count.with);
    assert!(
        count.without.is_empty(),
        "{} of {} parameters got no gradient (ids {:?})",
        count.without.len(),
        count.with + count.without.len(),
        count.without
    );
}
