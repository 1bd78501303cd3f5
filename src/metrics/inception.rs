//! The FID InceptionV3 (the TensorFlow graph of 2015-12-05 that FID is
//! defined on; Heusel et al. 2017), 2048-d pool3 features, built from the
//! safetensors file that `augment weights fetch` writes ([`crate::weights`]
//! finds it).
//!
//! Every `Conv2dLayer` is conv (no bias) → batch norm without scale
//! (eps 0.001) → ReLU; the batch norm is folded into the convolution at load
//! time. Stride and padding of every conv come from the file's
//! `layer_attrs` metadata (padding may be asymmetric, e.g. [0, 3] for 1×7
//! kernels; such layers are zero-padded explicitly). Blocks follow the
//! FID variant of pytorch-fid: InceptionA/C/E branch pools are 3×3 average
//! pools that exclude the padding, the last block (`mixed_10`) uses a 3×3 max
//! pool in its pool branch, and a final 8×8 average pool gives pool3.
//!
//! Input: (B, 3, 299, 299) in [-1, 1]; see [`super::fid`] for resizing.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::{D, DType, Device, Tensor};

/// One folded conv + BN + ReLU.
#[derive(Debug)]
struct ConvLayer {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    /// (top/bottom, left/right)
    padding: (usize, usize),
}

impl ConvLayer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let stride = (self.stride, self.stride);
        let y = crate::ops::conv::conv2d_hw(x, &self.weight, stride, self.padding)?;
        let y = y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)?;
        Ok(y.relu()?)
    }
}

/// The FID Inception network.
#[derive(Debug)]
pub struct FidInception {
    layers: HashMap<String, ConvLayer>,
}

fn read_metadata(path: &Path) -> Result<serde_json::Value> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let n = u64::from_le_bytes(len) as usize;
    if n > 100 << 20 {
        bail!("{}: not a safetensors file", path.display());
    }
    let mut header = vec![0u8; n];
    f.read_exact(&mut header)?;
    let h: serde_json::Value = serde_json::from_slice(&header)?;
    Ok(h["__metadata__"].clone())
}

impl FidInception {
    /// Loads the weights file.
    pub fn load(path: &Path, dev: &Device) -> Result<Self> {
        let meta = read_metadata(path)?;
        let attrs: serde_json::Value = serde_json::from_str(
            meta["layer_attrs"]
                .as_str()
                .context("weights file has no layer_attrs metadata")?,
        )?;
        let eps: f64 = meta["bn_eps"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.001);
        let t = candle_core::safetensors::load(path, dev)?;
        let mut layers = HashMap::new();
        let attrs = attrs.as_object().context("layer_attrs is not a map")?;
        for (name, a) in attrs {
            if a["class"] != "Conv2dLayer" {
                continue;
            }
            let get = |k: &str| {
                t.get(&format!("{name}.{k}"))
                    .with_context(|| format!("weights file lacks {name}.{k}"))
            };
            let scale = (get("var")?.to_dtype(DType::F64)? + eps)?.sqrt()?.recip()?;
            let w = get("weight")?.to_dtype(DType::F64)?;
            let weight = w
                .broadcast_mul(&scale.reshape(((), 1, 1, 1))?)?
                .to_dtype(DType::F32)?;
            let bias = (get("beta")?.to_dtype(DType::F64)?
                - (get("mean")?.to_dtype(DType::F64)? * &scale)?)?
                .to_dtype(DType::F32)?;
            let padding = match &a["padding"] {
                serde_json::Value::Array(v) => (
                    v[0].as_u64().unwrap_or(0) as usize,
                    v[1].as_u64().unwrap_or(0) as usize,
                ),
                v => {
                    let p = v.as_u64().unwrap_or(0) as usize;
                    (p, p)
                }
            };
            layers.insert(
                name.clone(),
                ConvLayer {
                    weight,
                    bias,
                    stride: a["stride"].as_u64().unwrap_or(1) as usize,
                    padding,
                },
            );
        }
        if layers.len() != 94 {
            bail!(
                "{}: expected the 94 convolutions of the FID Inception, found {}",
                path.display(),
                layers.len()
            );
        }
        Ok(FidInception { layers })
    }

    fn conv(&self, name: &str, x: &Tensor) -> Result<Tensor> {
        self.layers
            .get(name)
            .with_context(|| format!("no layer {name}"))?
            .forward(x)
    }

    fn chain(&self, names: &[String], x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for n in names {
            h = self.conv(n, &h)?;
        }
        Ok(h)
    }

    /// pool3 features (B, 2048) of images (B, 3, 299, 299) in [-1, 1].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv("conv", x)?;
        h = self.conv("conv_1", &h)?;
        h = self.conv("conv_2", &h)?;
        h = h.max_pool2d_with_stride(3, 2)?;
        h = self.conv("conv_3", &h)?;
        h = self.conv("conv_4", &h)?;
        h = h.max_pool2d_with_stride(3, 2)?;
        for m in ["mixed", "mixed_1", "mixed_2"] {
            h = self.block_a(m, &h)?;
        }
        h = self.block_b("mixed_3", &h)?;
        for m in ["mixed_4", "mixed_5", "mixed_6", "mixed_7"] {
            h = self.block_c(m, &h)?;
        }
        h = self.block_d("mixed_8", &h)?;
        h = self.block_e("mixed_9", &h, false)?;
        h = self.block_e("mixed_10", &h, true)?;
        Ok(h.mean(D::Minus1)?.mean(D::Minus1)?)
    }

    fn names(m: &str, parts: &[&str]) -> Vec<String> {
        parts.iter().map(|p| format!("{m}.{p}")).collect()
    }

    /// InceptionA: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg pool→1×1.
    fn block_a(&self, m: &str, x: &Tensor) -> Result<Tensor> {
        let b0 = self.conv(&format!("{m}.conv"), x)?;
        let b1 = self.chain(&Self::names(m, &["tower.conv", "tower.conv_1"]), x)?;
        let b2 = self.chain(
            &Self::names(m, &["tower_1.conv", "tower_1.conv_1", "tower_1.conv_2"]),
            x,
        )?;
        let b3 = self.conv(&format!("{m}.tower_2.conv"), &avg_pool3_exclude_pad(x)?)?;
        Ok(Tensor::cat(&[b0, b1, b2, b3], 1)?)
    }

    /// InceptionB (reduction): 3×3/2 | 1×1→3×3→3×3/2 | max pool 3/2.
    fn block_b(&self, m: &str, x: &Tensor) -> Result<Tensor> {
        let b0 = self.conv(&format!("{m}.conv"), x)?;
        let b1 = self.chain(
            &Self::names(m, &["tower.conv", "tower.conv_1", "tower.conv_2"]),
            x,
        )?;
        let b2 = x.max_pool2d_with_stride(3, 2)?;
        Ok(Tensor::cat(&[b0, b1, b2], 1)?)
    }

    /// InceptionC: 1×1 | 1×1→1×7→7×1 | 1×1→7×1→1×7→7×1→1×7 | avg pool→1×1.
    fn block_c(&self, m: &str, x: &Tensor) -> Result<Tensor> {
        let b0 = self.conv(&format!("{m}.conv"), x)?;
        let b1 = self.chain(
            &Self::names(m, &["tower.conv", "tower.conv_1", "tower.conv_2"]),
            x,
        )?;
        let b2 = self.chain(
            &Self::names(
                m,
                &[
                    "tower_1.conv",
                    "tower_1.conv_1",
                    "tower_1.conv_2",
                    "tower_1.conv_3",
                    "tower_1.conv_4",
                ],
            ),
            x,
        )?;
        let b3 = self.conv(&format!("{m}.tower_2.conv"), &avg_pool3_exclude_pad(x)?)?;
        Ok(Tensor::cat(&[b0, b1, b2, b3], 1)?)
    }

    /// InceptionD (reduction): 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max pool 3/2.
    fn block_d(&self, m: &str, x: &Tensor) -> Result<Tensor> {
        let b0 = self.chain(&Self::names(m, &["tower.conv", "tower.conv_1"]), x)?;
        let b1 = self.chain(
            &Self::names(
                m,
                &[
                    "tower_1.conv",
                    "tower_1.conv_1",
                    "tower_1.conv_2",
                    "tower_1.conv_3",
                ],
            ),
            x,
        )?;
        let b2 = x.max_pool2d_with_stride(3, 2)?;
        Ok(Tensor::cat(&[b0, b1, b2], 1)?)
    }

    /// InceptionE: 1×1 | 1×1→(1×3, 3×1) | 1×1→3×3→(1×3, 3×1) | pool→1×1,
    /// the pool being average (padding excluded) or, in the last block, max.
    fn block_e(&self, m: &str, x: &Tensor, max_pool: bool) -> Result<Tensor> {
        let b0 = self.conv(&format!("{m}.conv"), x)?;
        let t = self.conv(&format!("{m}.tower_conv"), x)?;
        let b1a = self.conv(&format!("{m}.tower_mixed_conv"), &t)?;
        let b1b = self.conv(&format!("{m}.tower_mixed_conv_1"), &t)?;
        let t = self.chain(&Self::names(m, &["tower_1_conv", "tower_1_conv_1"]), x)?;
        let b2a = self.conv(&format!("{m}.tower_1_mixed_conv"), &t)?;
        let b2b = self.conv(&format!("{m}.tower_1_mixed_conv_1"), &t)?;
        let pooled = if max_pool {
            max_pool3_same(x)?
        } else {
            avg_pool3_exclude_pad(x)?
        };
        let b3 = self.conv(&format!("{m}.tower_2_conv"), &pooled)?;
        Ok(Tensor::cat(&[b0, b1a, b1b, b2a, b2b, b3], 1)?)
    }
}

/// 3×3 average pool, stride 1, padding 1, padding excluded from the count
/// (`count_include_pad=False`).
fn avg_pool3_exclude_pad(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let padded = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    let sums = (padded.avg_pool2d_with_stride(3, 1)? * 9.0)?;
    // How many real pixels each window covers: 4 at corners, 6 on edges, 9 inside.
    let count = |i: usize, n: usize| -> f32 { if i == 0 || i + 1 == n { 2.0 } else { 3.0 } };
    let counts: Vec<f32> = (0..h)
        .flat_map(|y| (0..w).map(move |x| count(y, h) * count(x, w)))
        .collect();
    let counts = Tensor::from_vec(counts, (1, 1, h, w), x.device())?;
    Ok(sums.broadcast_div(&counts)?)
}

/// 3×3 max pool, stride 1, padding 1 (padding never wins).
fn max_pool3_same(x: &Tensor) -> Result<Tensor> {
    // Inputs are ReLU outputs (≥ 0), but pad with a large negative value so
    // the pool is right for any input.
    let (b, c, h, w) = x.dims4()?;
    let low = Tensor::full(-1e30f32, (b, c, h + 2, w + 2), x.device())?;
    let padded = low.slice_assign(&[0..b, 0..c, 1..h + 1, 1..w + 1], x)?;
    Ok(padded.max_pool2d_with_stride(3, 1)?)
}
