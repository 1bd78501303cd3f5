//! The convolution layers every model builds: the same parameters, names and
//! initialisation as `candle_nn`'s (`weight` [, `bias`]; checkpoints are
//! interchangeable), with the forward pass going through [`super::conv`]:
//! our GEMM kernels on the CPU, candle's own on other devices, and candle's
//! for the configurations ours do not cover (dilation or groups ≠ 1).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
pub use candle_nn::{Conv2dConfig, ConvTranspose2dConfig};

use super::conv;

fn add_bias(x: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        None => Ok(x),
        Some(b) => super::spatial::add_channel_bias(&x, b),
    }
}

/// A 2-D convolution layer.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dConfig,
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv2dConfig) -> Self {
        Conv2d {
            weight,
            bias,
            config,
        }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let y = if c.groups == 1 && c.dilation == 1 {
            conv::conv2d(x, &self.weight, c.stride, c.padding)?
        } else {
            x.conv2d(&self.weight, c.padding, c.stride, c.dilation, c.groups)?
        };
        add_bias(y, self.bias.as_ref())
    }
}

impl From<candle_nn::Conv2d> for Conv2d {
    fn from(c: candle_nn::Conv2d) -> Self {
        Conv2d::new(c.weight().clone(), c.bias().cloned(), *c.config())
    }
}

/// A 2-D transposed convolution layer (weight [Cin, Cout, k, k]).
#[derive(Debug, Clone)]
pub struct ConvTranspose2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: ConvTranspose2dConfig,
}

impl ConvTranspose2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: ConvTranspose2dConfig) -> Self {
        ConvTranspose2d {
            weight,
            bias,
            config,
        }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let y = if c.dilation == 1 {
            conv::conv_transpose2d(x, &self.weight, c.stride, c.padding, c.output_padding)?
        } else {
            x.conv_transpose2d(
                &self.weight,
                c.padding,
                c.output_padding,
                c.stride,
                c.dilation,
            )?
        };
        add_bias(y, self.bias.as_ref())
    }
}

impl From<candle_nn::ConvTranspose2d> for ConvTranspose2d {
    fn from(c: candle_nn::ConvTranspose2d) -> Self {
        ConvTranspose2d::new(c.weight().clone(), c.bias().cloned(), *c.config())
    }
}

/// As `candle_nn::conv2d`: weight [cout, cin, k, k] and a bias.
pub fn conv2d(
    cin: usize,
    cout: usize,
    k: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    Ok(candle_nn::conv2d(cin, cout, k, cfg, vb)?.into())
}

/// As `candle_nn::conv2d_no_bias`.
pub fn conv2d_no_bias(
    cin: usize,
    cout: usize,
    k: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    Ok(candle_nn::conv2d_no_bias(cin, cout, k, cfg, vb)?.into())
}

/// As `candle_nn::conv_transpose2d`: weight [cin, cout, k, k] and a bias.
pub fn conv_transpose2d(
    cin: usize,
    cout: usize,
    k: usize,
    cfg: ConvTranspose2dConfig,
    vb: VarBuilder,
) -> Result<ConvTranspose2d> {
    Ok(candle_nn::conv_transpose2d(cin, cout, k, cfg, vb)?.into())
}
