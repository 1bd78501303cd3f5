//! The inference side of an image-to-image translator (SG-GAN, StarGAN,
//! SeCGAN's G_rgb, which takes y_trg − y_src instead of the target labels):
//! editing images from source to target labels, every value of every edited
//! attribute at once (sample grids), and the critic's agreement with the
//! target labels (the `label_agreement` of synthesized rows). Training
//! samples, `synthesize` and `evaluate` all edit through this one type.

use candle_core::{DType, Device, Result, Tensor};

use super::critic::{Critic, value_logit};
use super::translator::{Condition, Kind, Translator};

/// Labels (bit sets over all attributes) restricted to `attrs`, (B, n) in {0, 1}.
pub fn attr_tensor(attrs: &[usize], labels: &[u64], dev: &Device) -> Result<Tensor> {
    let v: Vec<f32> = labels
        .iter()
        .flat_map(|l| attrs.iter().map(move |&a| ((l >> a) & 1) as f32))
        .collect();
    Tensor::from_vec(v, (labels.len(), attrs.len()), dev)
}

/// The translator together with its attributes: the inference side, shared
/// by training samples, evaluation and the synthesize stage. Labels are
/// bit sets over all attributes (bit `a` = attribute index `a`).
pub struct Editor<'a> {
    pub g: &'a Translator,
    pub kind: Kind,
    /// CelebA indices of the edited attributes.
    pub attrs: &'a [usize],
}

impl Editor<'_> {
    /// Labels of `rows` restricted to the edited attributes, (B, n) in {0, 1}.
    pub fn attr_tensor(&self, labels: &[u64], dev: &Device) -> Result<Tensor> {
        attr_tensor(self.attrs, labels, dev)
    }

    /// G's label maps for editing `source` to `target`: the target labels
    /// (StarGAN) or y_trg − y_src (SeCGAN), (B, n).
    pub fn condition(&self, source: &[u64], target: &[u64], dev: &Device) -> Result<Tensor> {
        let t = self.attr_tensor(target, dev)?;
        match self.g.condition() {
            Condition::Target => Ok(t),
            Condition::Difference => t - self.attr_tensor(source, dev)?,
        }
    }

    /// Each image under every value of every attribute: (B, 2n, 3, H, W),
    /// output 2j + v setting attribute j to v (StarGAN: the source labels
    /// with that one attribute set).
    pub fn all_values(&self, x: &Tensor, source: &[u64]) -> Result<Tensor> {
        match self.kind {
            Kind::Sggan => self.g.forward(x, None),
            Kind::Stargan => {
                let mut outs = Vec::new();
                for &a in self.attrs {
                    for v in [0u64, 1] {
                        let l: Vec<u64> =
                            source.iter().map(|s| (s & !(1 << a)) | (v << a)).collect();
                        let c = self.condition(source, &l, x.device())?;
                        outs.push(self.g.forward(x, Some(&c))?);
                    }
                }
                Tensor::stack(&outs, 1)
            }
        }
    }

    /// x edited from `source` to `target` labels. Attributes outside
    /// `attrs` are the caller's business. SG-GAN edits one attribute at a
    /// time (output 2j + target_j of each attribute whose value changes; a
    /// row with no change takes the first attribute's own-value output);
    /// StarGAN takes the target labels at once.
    pub fn edit(&self, x: &Tensor, source: &[u64], target: &[u64]) -> Result<Tensor> {
        let dev = x.device();
        match self.kind {
            Kind::Stargan => self
                .g
                .forward(x, Some(&self.condition(source, target, dev)?)),
            Kind::Sggan => {
                let b = source.len();
                let mut cur = x.clone();
                let untouched: Vec<bool> = (0..b)
                    .map(|r| {
                        self.attrs
                            .iter()
                            .all(|&a| (source[r] ^ target[r]) >> a & 1 == 0)
                    })
                    .collect();
                for (j, &a) in self.attrs.iter().enumerate() {
                    let pick: Vec<Option<u64>> = (0..b)
                        .map(|r| {
                            let changes = (source[r] ^ target[r]) >> a & 1 == 1;
                            (changes || (j == 0 && untouched[r])).then_some((target[r] >> a) & 1)
                        })
                        .collect();
                    if pick.iter().all(Option::is_none) {
                        continue;
                    }
                    let y = self.g.forward(&cur, None)?;
                    let rows: Vec<Tensor> = (0..b)
                        .map(|r| match pick[r] {
                            Some(v) => y.get(r)?.get(2 * j + v as usize),
                            None => cur.get(r),
                        })
                        .collect::<Result<_>>()?;
                    cur = Tensor::stack(&rows, 0)?;
                }
                Ok(cur)
            }
        }
    }
}

impl Editor<'_> {
    /// Per image, the fraction of the edited attributes on which `critic`'s
    /// classification head agrees with the target labels.
    pub fn critic_agreement(
        &self,
        critic: &Critic,
        y: &Tensor,
        target: &[u64],
    ) -> Result<Vec<f64>> {
        let (_, logits) = critic.forward(y)?;
        let logit = match self.kind {
            Kind::Sggan => value_logit(&logits, self.attrs.len())?,
            Kind::Stargan => logits,
        };
        let pred = logit.gt(0.0)?.to_dtype(DType::F32)?;
        let t = self.attr_tensor(target, y.device())?;
        let agree = pred.eq(&t)?.to_dtype(DType::F64)?.mean(1)?;
        agree.to_vec1::<f64>()
    }
}
