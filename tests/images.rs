//! Image decoding, transforms and the prefetching loader on the sample photos and on broken
//! files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use calm::data::image::{ImageError, decode_rgb, load_rgb};
use calm::data::{
    BadImagePolicy, Crop, ImageBatch, ImageFiles, Loader, LoaderConfig, SampleSource, Skipped,
    SourceConfig, Transform,
};
use calm::model::vision::Normalization;
use image::{ImageFormat, RgbImage};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/samples")
        .join(name)
}

fn loader_config(
    batch_size: usize,
    num_workers: usize,
    bad_images: BadImagePolicy,
) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        num_workers,
        prefetch_batches: 2,
        shuffle: false,
        drop_last: false,
        bad_images,
    }
}

fn transform(size: usize) -> Transform {
    Transform {
        size,
        resize_shorter: size,
        crop: Crop::Center,
        normalization: Normalization::Imagenet,
    }
}

/// A folder with three good photos, a truncated JPEG, a text file named `.jpg`, and a link to
/// a file that does not exist.
fn broken_folder() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut good = Vec::new();
    for name in [
        "scikit-image__chelsea.jpg",
        "scikit-image__coins.jpg",
        "scikit-learn__china.jpg",
    ] {
        let to = dir.path().join(name);
        std::fs::copy(sample(name), &to).expect("copy");
        good.push(to);
    }
    let bytes = std::fs::read(sample("scikit-image__astronaut.jpg")).expect("read");
    std::fs::write(dir.path().join("cut.jpg"), &bytes[..bytes.len() / 2]).expect("write");
    std::fs::write(dir.path().join("notes.jpg"), "not an image\n").expect("write");
    std::os::unix::fs::symlink(dir.path().join("gone.jpg"), dir.path().join("link.jpg"))
        .expect("symlink");
    std::fs::write(
        dir.path().join("README.txt"),
        "ignored: not an image extension",
    )
    .expect("write");
    good.sort();
    (dir, good)
}

fn loaded_paths<S: SampleSource>(loader: &Loader<S>, paths: &[PathBuf]) -> Vec<PathBuf> {
    loader
        .epoch(0)
        .flat_map(|b| b.expect("skip policy never fails").indices)
        .map(|i| paths[i].clone())
        .collect()
}

#[test]
fn bad_files_are_skipped_and_counted() {
    let (dir, good) = broken_folder();
    let source = SourceConfig::Folder(calm::data::FolderSource {
        path: dir.path().to_path_buf(),
        recursive: false,
    });
    let paths = source.image_paths().expect("scan");
    assert_eq!(
        paths.len(),
        6,
        "the scan picks files by extension: {paths:?}"
    );
    let loader = Loader::new(
        ImageFiles {
            paths: paths.clone(),
            transform: transform(32),
        },
        loader_config(2, 2, BadImagePolicy::Skip),
        0,
    );
    let mut loaded = loaded_paths(&loader, &paths);
    loaded.sort();
    assert_eq!(loaded, good);
    let skipped = loader.skipped();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    let reason = |file: &str| {
        skipped
            .iter()
            .find(|s| s.what.ends_with(file))
            .map(|s| s.reason.clone())
            .unwrap_or_else(|| panic!("{file} not skipped"))
    };
    assert!(reason("cut.jpg").contains("truncated"));
    assert!(reason("notes.jpg").contains("not a JPEG"));
    assert!(reason("link.jpg").contains("missing"));
}

#[test]
fn list_file_with_a_missing_path_yields_the_good_photos() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("list.txt");
    let chelsea = sample("scikit-image__chelsea.jpg");
    std::fs::write(
        &list,
        format!(
            "# sample list\n{}\n\nnowhere/missing.jpg\n{}\n",
            chelsea.display(),
            sample("scikit-image__moon.jpg").display()
        ),
    )
    .expect("write");
    let paths = SourceConfig::List(calm::data::ListSource { path: list })
        .image_paths()
        .expect("list");
    assert_eq!(paths.len(), 3);
    let loader = Loader::new(
        ImageFiles {
            paths: paths.clone(),
            transform: transform(16),
        },
        loader_config(8, 0, BadImagePolicy::Skip),
        0,
    );
    assert_eq!(
        loaded_paths(&loader, &paths),
        vec![chelsea, sample("scikit-image__moon.jpg")]
    );
    let skipped = loader.skipped();
    assert_eq!(skipped.len(), 1);
    assert!(
        skipped[0].what.ends_with("nowhere/missing.jpg"),
        "{skipped:?}"
    );
}

#[test]
fn fail_policy_stops_with_the_file_name() {
    let (dir, _) = broken_folder();
    let paths = calm::data::formats::scan_folder(dir.path(), false).expect("scan");
    let loader = Loader::new(
        ImageFiles {
            paths,
            transform: transform(16),
        },
        loader_config(1, 2, BadImagePolicy::Fail),
        0,
    );
    let err = loader.epoch(0).find_map(Result::err).expect("an error");
    let msg = err.to_string();
    assert!(
        msg.contains("cut.jpg") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn png_webp_and_jpeg_decode_alike() {
    let jpeg = load_rgb(&sample("scikit-image__chelsea.jpg")).expect("jpeg");
    assert_eq!(jpeg.dimensions(), (451, 300));
    for format in [ImageFormat::Png, ImageFormat::WebP] {
        let mut bytes = std::io::Cursor::new(Vec::new());
        jpeg.write_to(&mut bytes, format).expect("encode");
        let back = decode_rgb(bytes.get_ref()).expect("decode");
        assert_eq!(back, jpeg, "{format:?} is lossless here");
    }
    // Phones append trailers after the end-of-image marker; the photo is still whole.
    let mut trailer = std::fs::read(sample("scikit-image__chelsea.jpg")).expect("read");
    trailer.extend(std::iter::repeat_n(0xD9u8, 70_000));
    assert_eq!(decode_rgb(&trailer).expect("jpeg with trailer"), jpeg);
    assert_eq!(
        decode_rgb(b"GIF89a\x01\x00\x01\x00"),
        Err(ImageError::Unsupported(ImageFormat::Gif))
    );
}

/// Inserts an EXIF APP1 segment with the given orientation right after the JPEG's SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&0x0112u16.to_be_bytes());
    tiff.extend_from_slice(&3u16.to_be_bytes());
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_is_honoured() {
    let bytes = std::fs::read(sample("scikit-image__chelsea.jpg")).expect("read");
    let upright = decode_rgb(&bytes).expect("decode");
    // Orientation 6: the camera was turned clockwise; the viewer rotates 90 degrees clockwise.
    let rotated = decode_rgb(&with_exif_orientation(&bytes, 6)).expect("decode");
    assert_eq!(rotated.dimensions(), (300, 451));
    assert_eq!(rotated, image::imageops::rotate90(&upright));
    let flipped = decode_rgb(&with_exif_orientation(&bytes, 3)).expect("decode");
    assert_eq!(flipped, image::imageops::rotate180(&upright));
}

#[test]
fn transform_normalises_and_crops() {
    // A 4x2 image: the shorter side is already 2, so only the centre crop and scaling act.
    let mut img = RgbImage::new(4, 2);
    for (x, _, p) in img.enumerate_pixels_mut() {
        *p = image::Rgb([(x * 60) as u8, 255, 0]);
    }
    let t = Transform {
        size: 2,
        resize_shorter: 2,
        crop: Crop::Center,
        normalization: Normalization::Inception,
    };
    let out = t
        .apply(&img, &mut StdRng::seed_from_u64(0))
        .expect("transform");
    assert_eq!(out.len(), 3 * 2 * 2);
    // Columns 1 and 2 of the 4 remain; red = x*60/255 mapped to [-1, 1].
    let red = |x: f32| (x * 60.0 / 255.0 - 0.5) / 0.5;
    assert!(
        (out[0] - red(1.0)).abs() < 1e-6 && (out[1] - red(2.0)).abs() < 1e-6,
        "{out:?}"
    );
    assert!(out[4..8].iter().all(|&g| (g - 1.0).abs() < 1e-6));
    assert!(out[8..12].iter().all(|&b| (b + 1.0).abs() < 1e-6));
    let photo = load_rgb(&sample("scikit-image__chelsea.jpg")).expect("jpeg");
    let random = Transform {
        crop: Crop::Random,
        ..transform(224)
    };
    let a = random
        .apply(&photo, &mut StdRng::seed_from_u64(1))
        .expect("crop");
    let b = random
        .apply(&photo, &mut StdRng::seed_from_u64(1))
        .expect("crop");
    assert_eq!(a.len(), 3 * 224 * 224);
    assert_eq!(a, b, "same seed, same crop");
}

#[test]
fn batches_come_in_order_for_any_worker_count() {
    let paths = calm::data::formats::scan_folder(&sample(""), false).expect("samples");
    assert_eq!(paths.len(), 29);
    let run = |workers: usize| {
        let cfg = LoaderConfig {
            shuffle: true,
            ..loader_config(4, workers, BadImagePolicy::Skip)
        };
        let loader = Loader::new(
            ImageFiles {
                paths: paths.clone(),
                transform: Transform {
                    crop: Crop::Random,
                    ..transform(24)
                },
            },
            cfg,
            7,
        );
        loader
            .epoch(3)
            .map(|b| b.expect("batch"))
            .map(|b| (b.indices, b.items))
            .collect::<Vec<_>>()
    };
    let inline = run(0);
    assert_eq!(inline.len(), 8);
    let mut seen: Vec<usize> = inline.iter().flat_map(|(i, _)| i.clone()).collect();
    assert_ne!(seen, (0..29).collect::<Vec<_>>(), "shuffled");
    seen.sort();
    assert_eq!(seen, (0..29).collect::<Vec<_>>(), "each image once");
    assert_eq!(run(1), inline);
    assert_eq!(run(3), inline, "workers change the speed, not the data");
}

#[test]
fn image_batch_becomes_a_tensor() {
    let paths = vec![
        sample("scikit-image__chelsea.jpg"),
        sample("scikit-image__coins.jpg"),
    ];
    let loader = Loader::new(
        ImageFiles {
            paths,
            transform: transform(32),
        },
        loader_config(2, 1, BadImagePolicy::Skip),
        0,
    );
    let batch = loader.epoch(0).next().expect("one batch").expect("loads");
    let batch = ImageBatch::from_batch(batch, 32);
    let tensor = batch.to_tensor(&burn::tensor::Device::flex());
    assert_eq!(tensor.dims(), [2, 3, 32, 32]);
    let values: Vec<f32> = tensor.into_data().try_to_vec().expect("f32");
    assert_eq!(values, batch.pixels);
}

/// A source that sleeps instead of decoding, to see the workers overlap with the consumer.
struct Slow;

impl SampleSource for Slow {
    type Item = usize;
    fn len(&self) -> usize {
        8
    }
    fn load(&self, index: usize, _: &mut StdRng) -> Result<usize, Skipped> {
        std::thread::sleep(Duration::from_millis(60));
        Ok(index)
    }
}

#[test]
fn workers_prefetch_while_the_consumer_computes() {
    let consume = |workers: usize| {
        let loader = Loader::new(Slow, loader_config(1, workers, BadImagePolicy::Skip), 0);
        let start = Instant::now();
        let mut got = Vec::new();
        for batch in loader.epoch(0) {
            std::thread::sleep(Duration::from_millis(60));
            got.extend(batch.expect("batch").items);
        }
        assert_eq!(got, (0..8).collect::<Vec<_>>());
        start.elapsed()
    };
    let serial = consume(0);
    let overlapped = consume(2);
    // Serial: 8 x (60 load + 60 compute) = 960 ms. With two workers loading ahead, the
    // consumer's 8 x 60 ms dominates: about 540 ms.
    assert!(serial >= Duration::from_millis(900), "{serial:?}");
    assert!(
        overlapped < Duration::from_millis(760),
        "{overlapped:?} vs serial {serial:?}"
    );
}

#[test]
fn dropping_an_epoch_early_stops_the_workers() {
    let loader = Loader::new(Slow, loader_config(1, 2, BadImagePolicy::Skip), 0);
    let start = Instant::now();
    let first = loader.epoch(0).next().expect("a batch").expect("ok");
    assert_eq!(first.items, vec![0]);
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "drop joined promptly: {:?}",
        start.elapsed()
    );
}

/// Panics on one sample, as a decoder might on a hostile file.
struct Fragile;

impl SampleSource for Fragile {
    type Item = usize;
    fn len(&self) -> usize {
        6
    }
    fn describe(&self, index: usize) -> String {
        format!("photo-{index}.jpg")
    }
    fn load(&self, index: usize, _: &mut StdRng) -> Result<usize, Skipped> {
        assert!(index != 4, "decoder bug");
        Ok(index)
    }
}

#[test]
fn a_panicking_sample_is_skipped_not_fatal() {
    for workers in [0, 2] {
        let loader = Loader::new(Fragile, loader_config(4, workers, BadImagePolicy::Skip), 0);
        let got: Vec<usize> = loader
            .epoch(0)
            .flat_map(|b| b.expect("batch").items)
            .collect();
        assert_eq!(got, vec![0, 1, 2, 3, 5], "workers={workers}");
        let skipped = loader.skipped();
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].what, "photo-4.jpg");
        assert!(skipped[0].reason.contains("panicked"));
    }
}

#[test]
fn skips_are_logged_in_batch_order_whatever_the_workers() {
    let (dir, _) = broken_folder();
    let paths = calm::data::formats::scan_folder(dir.path(), false).expect("scan");
    let names = |workers: usize| {
        let loader = Loader::new(
            ImageFiles {
                paths: paths.clone(),
                transform: transform(16),
            },
            loader_config(1, workers, BadImagePolicy::Skip),
            0,
        );
        loader.epoch(0).for_each(drop);
        loader
            .skipped()
            .into_iter()
            .map(|s| s.index)
            .collect::<Vec<_>>()
    };
    let inline = names(0);
    assert_eq!(inline.len(), 3);
    assert!(inline.windows(2).all(|w| w[0] < w[1]), "{inline:?}");
    assert_eq!(names(3), inline);
}

#[test]
fn extreme_aspect_ratios_are_refused_not_resized() {
    let strip = RgbImage::new(5000, 1);
    let err = transform(224)
        .apply(&strip, &mut StdRng::seed_from_u64(0))
        .expect_err("strip");
    assert_eq!(err, ImageError::ExtremeAspect(5000, 1));
    let panorama = RgbImage::new(2000, 100);
    assert_eq!(
        transform(32)
            .apply(&panorama, &mut StdRng::seed_from_u64(0))
            .expect("20:1 passes")
            .len(),
        3 * 32 * 32
    );
}
