//! The `--device` flag: which backend and device a run uses. The backends compiled in are
//! Cargo features (`flex` by default, `wgpu`, `cuda`); asking for one that is not compiled in
//! is an error that says how to rebuild, never a silent fallback to another backend.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// A device named on the command line: `cpu`, `wgpu`, `cuda:N` or `cuda:auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The pure-Rust `flex` backend.
    Cpu,
    /// The default adapter of wgpu (Vulkan, Metal, DX12; software Vulkan on a CPU-only machine).
    Wgpu,
    Cuda(usize),
    /// The GPU of this process's rank on its machine (data-parallel jobs: one process per
    /// GPU); `cuda:0` for a process started alone.
    CudaAuto,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("unknown device `{0}`: expected cpu, wgpu, cuda:N or cuda:auto")]
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
            "cuda:auto" => Ok(Self::CudaAuto),
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
            Self::CudaAuto => write!(f, "cuda:auto"),
        }
    }
}

impl DeviceSpec {
    /// `cuda:auto` as the GPU of `local_rank` (the process's rank on its machine); any other
    /// spec as it is.
    pub fn on_local_rank(self, local_rank: usize) -> Self {
        match self {
            Self::CudaAuto => Self::Cuda(local_rank),
            other => other,
        }
    }

    /// The Burn device, from the backend this spec names explicitly.
    pub fn device(self) -> Result<Device, DeviceError> {
        match self {
            #[cfg(feature = "flex")]
            Self::Cpu => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(feature = "cuda")]
            Self::Cuda(index) => Ok(Device::cuda(index)),
            #[cfg(feature = "cuda")]
            Self::CudaAuto => Ok(Device::cuda(0)),
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
            Self::Cuda(_) | Self::CudaAuto => "cuda",
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
        assert_eq!("cuda:auto".parse(), Ok(DeviceSpec::CudaAuto));
        assert_eq!(DeviceSpec::CudaAuto.on_local_rank(3), DeviceSpec::Cuda(3));
        assert_eq!(DeviceSpec::Cpu.on_local_rank(3), DeviceSpec::Cpu);
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
