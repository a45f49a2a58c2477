//! The `--device` flag: which backend and device a run uses. The backends compiled in are
//! Cargo features (`flex` by default, `wgpu`, `cuda`); asking for one that is not compiled in
//! is an error that says how to rebuild, never a silent fallback to another backend.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// A device named on the command line: `cpu`, `wgpu` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The pure-Rust `flex` backend.
    Cpu,
    /// The default adapter of wgpu (Vulkan, Metal, DX12; software Vulkan on a CPU-only machine).
    Wgpu,
    Cuda(usize),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("unknown device `{0}`: expected cpu, wgpu or cuda:N")]
    Unknown(String),
    #[error(
        "device `{spec}` needs the `{feature}` backend, which this build lacks: rebuild with `--features {feature}`"
    )]
    NotCompiled {
        spec: DeviceSpec,
        feature: &'static str,
    },
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| DeviceError::Unknown(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Wgpu => write!(f, "wgpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceSpec {
    /// The Burn device, from the backend this spec names explicitly.
    pub fn device(self) -> Result<Device, DeviceError> {
        match self {
            #[cfg(feature = "flex")]
            Self::Cpu => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(feature = "cuda")]
            Self::Cuda(index) => Ok(Device::cuda(index)),
            #[allow(unreachable_patterns)]
            spec => Err(DeviceError::NotCompiled {
                spec,
                feature: spec.feature(),
            }),
        }
    }

    fn feature(self) -> &'static str {
        match self {
            Self::Cpu => "flex",
            Self::Wgpu => "wgpu",
            Self::Cuda(_) => "cuda",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("wgpu".parse(), Ok(DeviceSpec::Wgpu));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert_eq!("CUDA".parse(), Ok(DeviceSpec::Cuda(0)));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn missing_backend_says_how_to_rebuild() {
        let err = DeviceSpec::Cuda(0)
            .device()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
