//! Every Arrow schema `augment` writes: the single source of truth.
//!
//! Column names are lowercase so that DataFusion's unquoted identifiers match
//! them (`SELECT smiling FROM faces`). `schemas/*.md` is generated from
//! [`all_tables`]; `tests/it/schemas.rs` fails when the two drift apart.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};

/// The 40 CelebA attributes, in the order of `list_attr_celeba.txt`.
pub const ATTRIBUTES: [&str; 40] = [
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
];

/// The abbreviations of Sec. V-A of Liu et al. (used on chart axes), same order.
pub const ABBREVIATIONS: [&str; 40] = [
    "5CS", "AE", "A", "BUE", "Bal", "Ban", "BL", "BN", "BlaH", "BloH", "Blu", "BroH", "BE", "C",
    "DC", "E", "G", "GH", "HM", "HC", "Ma", "MSO", "Mu", "NE", "NB", "OF", "PS", "PN", "RH", "RC",
    "Si", "Sm", "SH", "WHa", "WE", "WH", "WL", "WNI", "WNt", "Y",
];

pub const N_ATTRIBUTES: usize = 40;

/// Attribute index by CelebA name.
pub fn attribute_index(name: &str) -> Option<usize> {
    ATTRIBUTES.iter().position(|a| *a == name)
}

/// The column name of attribute `i`: the CelebA name in lowercase.
pub fn attribute_column(i: usize) -> String {
    ATTRIBUTES[i].to_ascii_lowercase()
}

/// Attribute index by column name (lowercase) or CelebA name.
pub fn attribute_by_any_name(name: &str) -> Option<usize> {
    ATTRIBUTES.iter().position(|a| a.eq_ignore_ascii_case(name))
}

/// A field with a human description in its metadata (rendered into `schemas/`).
fn field(name: &str, dt: DataType, nullable: bool, doc: &str) -> Field {
    Field::new(name, dt, nullable).with_metadata(HashMap::from([(
        "description".to_string(),
        doc.to_string(),
    )]))
}

fn attribute_fields(doc: &str) -> Vec<Field> {
    (0..N_ATTRIBUTES)
        .map(|i| {
            field(
                &attribute_column(i),
                DataType::Boolean,
                false,
                &format!("{doc} `{}`", ATTRIBUTES[i]),
            )
        })
        .collect()
}

/// The Hugging Face `datasets` Image struct: `{bytes: binary, path: string}`.
pub fn image_struct_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]))
}

/// Names of the optional bounding-box columns (from `list_bbox_celeba.txt`).
pub const BBOX_COLUMNS: [&str; 4] = ["bbox_x_1", "bbox_y_1", "bbox_width", "bbox_height"];
/// Names of the optional landmark columns (from `list_landmarks_align_celeba.txt`).
pub const LANDMARK_COLUMNS: [&str; 10] = [
    "lefteye_x",
    "lefteye_y",
    "righteye_x",
    "righteye_y",
    "nose_x",
    "nose_y",
    "leftmouth_x",
    "leftmouth_y",
    "rightmouth_x",
    "rightmouth_y",
];

/// `faces`: one row per ingested image (ingest stage).
pub fn faces(with_bbox: bool, with_landmarks: bool) -> SchemaRef {
    let mut fields = vec![
        field(
            "image_id",
            DataType::Utf8,
            false,
            "CelebA file name, e.g. `000001.jpg`",
        ),
        field(
            "partition",
            DataType::Utf8,
            false,
            "`train`, `val` or `test` (official split)",
        ),
        field(
            "identity",
            DataType::Int32,
            true,
            "CelebA identity (1..10177); null when `identity_CelebA.txt` is absent",
        ),
    ];
    fields.extend(attribute_fields("CelebA attribute"));
    if with_bbox {
        for c in BBOX_COLUMNS {
            fields.push(field(
                c,
                DataType::Int32,
                true,
                "from `list_bbox_celeba.txt` (optional)",
            ));
        }
    }
    if with_landmarks {
        for c in LANDMARK_COLUMNS {
            fields.push(field(
                c,
                DataType::Int32,
                true,
                "from `list_landmarks_align_celeba.txt` (optional)",
            ));
        }
    }
    fields.push(field(
        "image",
        image_struct_type(),
        true,
        "Hugging Face `datasets` Image struct {bytes: PNG, path}; null when ingested with `images = false`",
    ));
    Arc::new(Schema::new(fields))
}

/// `rejects`: images the ingest stage could not use, with the reason.
pub fn rejects() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("image_id", DataType::Utf8, false, "file name"),
        field(
            "reason",
            DataType::Utf8,
            false,
            "`missing` (annotated, not on disk), `not_annotated` (on disk, no labels), `unreadable` (permissions, I/O), `not_a_file` (a FIFO, socket, device or folder), `too_large` (over 64 MiB), `empty` (zero bytes), `not_an_image` (e.g. an HTML page or gzip saved as .jpg), `truncated` (cut off before its end-of-image marker), `corrupt` (the strict decoder's error, or over 8192 px a side), `unsupported_color` or `wrong_size` (not CelebA's aligned 178x218)",
        ),
        field(
            "detail",
            DataType::Utf8,
            false,
            "what exactly was wrong: the decoder's message, the byte the file ends at, the size found",
        ),
    ]))
}

/// The `strategy` of a `plan` row: which method made it. Written by
/// `balance`, read by `synthesize` (and by users through SQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlanStrategy {
    /// A real face kept as it is.
    Original,
    RandomDoubling,
    DynamicBalancing,
    Flip,
    Crop,
    Erase,
    MlRos,
    /// BridgeGAN's reference-guided rows: one attribute flipped, towards a
    /// real reference face that has the target value.
    Reference,
}

impl PlanStrategy {
    pub const ALL: [PlanStrategy; 8] = [
        PlanStrategy::Original,
        PlanStrategy::RandomDoubling,
        PlanStrategy::DynamicBalancing,
        PlanStrategy::Flip,
        PlanStrategy::Crop,
        PlanStrategy::Erase,
        PlanStrategy::MlRos,
        PlanStrategy::Reference,
    ];

    /// The value in the `strategy` column.
    pub fn name(self) -> &'static str {
        match self {
            PlanStrategy::Original => "original",
            PlanStrategy::RandomDoubling => "random_doubling",
            PlanStrategy::DynamicBalancing => "dynamic_balancing",
            PlanStrategy::Flip => "flip",
            PlanStrategy::Crop => "crop",
            PlanStrategy::Erase => "erase",
            PlanStrategy::MlRos => "ml_ros",
            PlanStrategy::Reference => "reference",
        }
    }

    pub fn from_name(s: &str) -> Option<PlanStrategy> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Where a row of this strategy comes from in `synth`/`augmented`.
    pub fn origin(self) -> Origin {
        match self {
            PlanStrategy::Original => Origin::Real,
            PlanStrategy::RandomDoubling
            | PlanStrategy::DynamicBalancing
            | PlanStrategy::Reference => Origin::Generated,
            PlanStrategy::Flip | PlanStrategy::Crop | PlanStrategy::Erase | PlanStrategy::MlRos => {
                Origin::Classic
            }
        }
    }
}

/// The `origin` column of `synth` and `augmented`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A real face.
    Real,
    /// Drawn or edited by a generator.
    Generated,
    /// A real face under an image operation (flip, crop, erase) or a copy (ML-ROS).
    Classic,
}

impl Origin {
    pub fn name(self) -> &'static str {
        match self {
            Origin::Real => "real",
            Origin::Generated => "generated",
            Origin::Classic => "classic",
        }
    }
}

/// `plan`: one row per sample of the balanced dataset (balance stage).
pub fn plan() -> SchemaRef {
    let mut fields = vec![
        field(
            "sample_id",
            DataType::Int64,
            false,
            "row number of the plan, from 0",
        ),
        field(
            "source_image_id",
            DataType::Utf8,
            false,
            "the `faces.image_id` this sample starts from",
        ),
        field(
            "strategy",
            DataType::Utf8,
            false,
            "`original`, `random_doubling`, `dynamic_balancing`, `flip`, `crop`, `erase`, `ml_ros` or `reference`",
        ),
        field(
            "op",
            DataType::Utf8,
            true,
            "image operation for classic rows (`flip`, `crop`, `erase`), else null",
        ),
        field(
            "op_x",
            DataType::Int32,
            true,
            "crop/erase box left (pixels of the ingested image)",
        ),
        field("op_y", DataType::Int32, true, "crop/erase box top"),
        field("op_width", DataType::Int32, true, "crop/erase box width"),
        field("op_height", DataType::Int32, true, "crop/erase box height"),
        field(
            "op_seed",
            DataType::Int64,
            true,
            "seed of the operation's randomness (erase fill)",
        ),
    ];
    fields.extend(attribute_fields("target label"));
    fields.push(field(
        "changed_attributes",
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, false))),
        false,
        "lowercase names of the attributes that differ from the source image's labels",
    ));
    fields.push(field(
        "implausible",
        DataType::Boolean,
        false,
        "the label vector breaks an obvious CelebA exclusion (two hair colours, bald with hair or bangs, ...)",
    ));
    fields.push(field(
        "reference_image_id",
        DataType::Utf8,
        true,
        "`reference` rows: the real face (a `faces.image_id`) whose features guide the edit (BridgeGAN); null for every other strategy",
    ));
    Arc::new(Schema::new(fields))
}

/// `label_stats`: one row per attribute, before and after balancing.
pub fn label_stats() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field(
            "attribute",
            DataType::Utf8,
            false,
            "lowercase attribute name",
        ),
        field(
            "abbreviation",
            DataType::Utf8,
            false,
            "abbreviation of Sec. V-A",
        ),
        field(
            "positives_before",
            DataType::Int64,
            false,
            "positives among the source rows",
        ),
        field(
            "positives_after",
            DataType::Int64,
            false,
            "positives in the whole plan",
        ),
        field(
            "proportion_before",
            DataType::Float64,
            false,
            "positives_before / source rows",
        ),
        field(
            "proportion_after",
            DataType::Float64,
            false,
            "positives_after / plan rows",
        ),
        field(
            "irlbl_before",
            DataType::Float64,
            true,
            "imbalance ratio per label (Charte et al. 2015): max positives / positives; null when 0",
        ),
        field(
            "irlbl_after",
            DataType::Float64,
            true,
            "IRLbl over the plan; null when 0",
        ),
    ]))
}

/// `train_log`: every logged loss of a `train_generator` stage.
pub fn train_log() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field(
            "phase",
            DataType::Utf8,
            false,
            "`autoencoder`, `classifier`, `mapping`, `dcgan`, `<phase>_round<r>` for recursive rounds, `sggan` / `stargan`, `st_gan`, `bridgegan`, `secgan` or `parser`",
        ),
        field(
            "step",
            DataType::Int64,
            false,
            "optimisation step within the phase, from 1 (0 for values measured before training)",
        ),
        field(
            "loss",
            DataType::Utf8,
            false,
            "name, e.g. `AE/rec_l1`, `D/real`, `k_t`, `M`, `C/loss`, `Phi/perceptual`, `val/rec_l1`, `D/wasserstein`, `G/cls`, `E/prior_z`, `mi_lower_bound`",
        ),
        field("value", DataType::Float64, false, "its value"),
    ]))
}

/// `labelled`: SG-GAN's sparse grouping, the (image, attribute) pairs
/// trained with their label (the rest were mixed data).
pub fn labelled() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("image_id", DataType::Utf8, false, "training face"),
        field(
            "attribute",
            DataType::Utf8,
            false,
            "CelebA attribute whose label this image kept",
        ),
        field("value", DataType::Boolean, false, "the label it kept"),
    ]))
}

/// `latent_map`: what each ST-GAN latent unit does to each attribute, by
/// the judge classifier (one row per unit and attribute).
pub fn latent_map() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field(
            "unit",
            DataType::Utf8,
            false,
            "`c1=<k>` (c₁ set to value k, from 1), `c2` (the c₂ sweep) or `c2_<d>` for c₂ dimension d",
        ),
        field("attribute", DataType::Utf8, false, "CelebA attribute"),
        field(
            "mean_probability",
            DataType::Float64,
            false,
            "the judge's mean probability of the attribute on the decoded faces",
        ),
        field(
            "change",
            DataType::Float64,
            false,
            "mean_probability minus that of the plain reconstructions G(E(x))",
        ),
        field(
            "correlation",
            DataType::Float64,
            true,
            "c₂ only: Pearson r of probability against the c₂ value; null for c₁ or a constant probability",
        ),
        field(
            "slope",
            DataType::Float64,
            true,
            "c₂ only: least-squares slope of probability per unit of c₂",
        ),
        field("n", DataType::Int64, false, "decoded faces behind the row"),
    ]))
}

/// `attribute_map`: per attribute, the ST-GAN code settings that turn it
/// on and off (read by `synthesize`).
pub fn attribute_map() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("attribute", DataType::Utf8, false, "CelebA attribute"),
        field(
            "on",
            DataType::Utf8,
            false,
            "the setting with the highest positive rate: `c1=<k>`, or `c2=1` / `c2=-1` by the sign of the correlation",
        ),
        field(
            "off",
            DataType::Utf8,
            false,
            "the setting with the lowest positive rate",
        ),
        field(
            "on_rate",
            DataType::Float64,
            false,
            "share of decoded faces the judge calls positive under `on`",
        ),
        field("off_rate", DataType::Float64, false, "the same under `off`"),
        field(
            "usable",
            DataType::Boolean,
            false,
            "on_rate − off_rate ≥ st_gan.map.min_effect: synthesize may edit this attribute",
        ),
    ]))
}

fn synth_fields() -> Vec<Field> {
    vec![
        field(
            "sample_id",
            DataType::Int64,
            false,
            "the plan row this sample realises",
        ),
        field(
            "source_image_id",
            DataType::Utf8,
            false,
            "the `faces.image_id` the plan row starts from",
        ),
        field("strategy", DataType::Utf8, false, "the plan row's strategy"),
        field(
            "origin",
            DataType::Utf8,
            false,
            "`real` (a source image), `generated` (drawn by the generator) or `classic` (an image operation or an oversampled copy)",
        ),
        field(
            "generator",
            DataType::Utf8,
            true,
            "`<stage>@sha256:<checkpoint hash>` for generated rows, else null",
        ),
        field(
            "seed",
            DataType::Int64,
            true,
            "the seed that fixes this row: the erase seed for `erase` rows, the run seed otherwise; null for real rows",
        ),
    ]
}

/// The image column of `synth` and `augmented`. Nullable like `faces.image`:
/// `datasets` applies its Image feature only when the Arrow field equals the
/// one it would write, nullability included.
fn synthesized_image_field() -> Field {
    field(
        "image",
        image_struct_type(),
        true,
        "Hugging Face `datasets` Image struct {bytes: PNG, path}; never null here",
    )
}

/// `synth`: one row per synthesized plan row (synthesize stage).
pub fn synth() -> SchemaRef {
    let mut fields = synth_fields();
    fields.extend(attribute_fields("target label"));
    fields.push(field(
        "label_agreement",
        DataType::Float64,
        true,
        "fraction of the 40 target labels on which classifier C agrees with the image; null without a generator stage",
    ));
    fields.push(synthesized_image_field());
    Arc::new(Schema::new(fields))
}

/// `augmented`: the real source rows plus every kept synthesized row — the
/// table to train external classifiers on.
pub fn augmented() -> SchemaRef {
    let mut fields = vec![field(
        "image_id",
        DataType::Utf8,
        false,
        "`faces.image_id` for real rows, `synth_<sample_id>.png` for synthesized rows",
    )];
    fields.extend(synth_fields());
    fields.extend(attribute_fields("label"));
    fields.push(field(
        "label_agreement",
        DataType::Float64,
        true,
        "as in `synth`; null for real rows",
    ));
    fields.push(synthesized_image_field());
    Arc::new(Schema::new(fields))
}

/// `predictions`: a downstream classifier's output on the real test split.
pub fn predictions() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field(
            "image_id",
            DataType::Utf8,
            false,
            "the test face (`faces.image_id`)",
        ),
        field(
            "attribute",
            DataType::Utf8,
            false,
            "lowercase attribute name",
        ),
        field("label", DataType::Boolean, false, "the CelebA label"),
        field(
            "probability",
            DataType::Float64,
            false,
            "the classifier's probability that the attribute is present (predicted when > 0.5)",
        ),
        field(
            "repeat",
            DataType::Int64,
            false,
            "which training (0-based; `repeats` in the stage config)",
        ),
    ]))
}

/// `metrics`: one row per measured value.
pub fn metrics() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field(
            "run",
            DataType::Utf8,
            false,
            "the run's name (`[run] name`)",
        ),
        field(
            "stage",
            DataType::Utf8,
            false,
            "the stage measured: the classifier, synthesize or generator stage the value is about",
        ),
        field(
            "metric",
            DataType::Utf8,
            false,
            "`accuracy` (the paper's, Sec. V-D), `balanced_accuracy`, `f1`, `val_accuracy`, `best_epoch` and with `repeats > 1` their `*_std` (train_classifier); `<metric>_low95`/`_high95`, `<metric>_diff`, `_diff_low95`, `_diff_high95`, `_diff_p`, `_diff_p_holm` (evaluate, per classifier); `fid` (per `attribute` too: rows that change it, translation generators), `kid`, `editing_accuracy`, `untouched_accuracy`, `background_ms_ssim`, `reconstruction_ms_ssim`, `reconstruction_psnr`, `label_agreement`, `label_agreement_full`, `size_sweep_*` (evaluate)",
        ),
        field(
            "attribute",
            DataType::Utf8,
            true,
            "lowercase attribute name; null for a value over all attributes",
        ),
        field("value", DataType::Float64, false, "the value"),
        field("n", DataType::Int64, false, "samples it was measured on"),
        field(
            "details",
            DataType::Utf8,
            false,
            "JSON: the split, architecture, training table and anything else needed to compare rows",
        ),
        field(
            "repeat",
            DataType::Int64,
            true,
            "which training of a `train_classifier` stage with `repeats > 1` (0-based); null for the mean over repeats (std in `<metric>_std`), a single training, and every other stage's rows",
        ),
    ]))
}

/// `masks` (parse_faces): one row per ingested face with its predicted
/// class map and the pixel share of each of `classes`.
pub fn masks(classes: &[&str]) -> SchemaRef {
    let mut f = vec![
        field(
            "image_id",
            DataType::Utf8,
            false,
            "the face's `faces.image_id`",
        ),
        field("partition", DataType::Utf8, false, "its `faces.partition`"),
        field(
            "mask",
            image_struct_type(),
            true,
            "8-bit grey PNG of class ids (0-based, in the stage's class order) at the ingest image size; HF `Image` struct",
        ),
    ];
    for c in classes {
        f.push(field(
            &format!("frac_{c}"),
            DataType::Float64,
            false,
            &format!("share of the face's pixels predicted `{c}` (the frac_ columns sum to 1)"),
        ));
    }
    f.push(field(
        "confidence",
        DataType::Float64,
        false,
        "mean over pixels of the parser's largest softmax probability",
    ));
    f.push(field(
        "source",
        DataType::Utf8,
        false,
        "`parser` (predicted by the stage's parser P)",
    ));
    Arc::new(Schema::new(f))
}

/// `demo_masks` (ingest of demo faces): the renderer's class map of each face.
pub fn demo_masks() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field(
            "image_id",
            DataType::Utf8,
            false,
            "the face's `faces.image_id`",
        ),
        field("partition", DataType::Utf8, false, "its `faces.partition`"),
        field(
            "mask",
            image_struct_type(),
            true,
            "8-bit grey PNG of SeCGAN's 12 class ids (0 others, 1 skin, 2 eyebrows, 3 eyes, 4 eyeglasses, 5 ears, 6 earrings, 7 nose, 8 mouth, 9 lips, 10 neck, 11 hair) as the renderer drew them, cropped like the image and resized with nearest neighbour; HF `Image` struct",
        ),
    ]))
}

/// Every table `augment` writes, by name, for `schemas/` and docs/tables.md.
pub fn all_tables() -> Vec<(&'static str, &'static str, SchemaRef)> {
    vec![
        ("faces", "ingest", faces(false, false)),
        ("rejects", "ingest", rejects()),
        ("demo_masks", "ingest (demo faces)", demo_masks()),
        ("plan", "balance", plan()),
        ("label_stats", "balance", label_stats()),
        ("train_log", "train_generator, parse_faces", train_log()),
        ("labelled", "train_generator", labelled()),
        ("latent_map", "train_generator", latent_map()),
        ("attribute_map", "train_generator", attribute_map()),
        ("synth", "synthesize", synth()),
        ("augmented", "synthesize", augmented()),
        ("predictions", "train_classifier", predictions()),
        ("metrics", "train_classifier, evaluate", metrics()),
        ("parser_metrics", "parse_faces", metrics()),
        (
            "masks",
            "parse_faces",
            masks(&crate::data::face_parsing::SECGAN12),
        ),
    ]
}

/// Human-readable rendering of a schema (the content of `schemas/<table>.md`).
pub fn render_markdown(table: &str, stage: &str, schema: &Schema) -> String {
    let mut s = format!(
        "# `{table}` (written by the `{stage}` stage)\n\n\
         Generated from `src/data/schema.rs`; `tests/it/schemas.rs` fails when they drift \
         (regenerate with `UPDATE_SCHEMAS=1 cargo test --test it schemas::`).\n\n\
         | column | type | nullable | meaning |\n| --- | --- | --- | --- |\n"
    );
    for f in schema.fields() {
        let doc = f.metadata().get("description").cloned().unwrap_or_default();
        s.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            f.name(),
            type_name(f.data_type()),
            if f.is_nullable() { "yes" } else { "no" },
            doc
        ));
    }
    if table == "faces" {
        s.push_str(
            "\nWhen the annotation folder holds `list_bbox_celeba.txt`, the columns \
             `bbox_x_1`, `bbox_y_1`, `bbox_width`, `bbox_height` (int32) follow the attributes; \
             with `list_landmarks_align_celeba.txt`, `lefteye_x` … `rightmouth_y` (int32).\n",
        );
    }
    s
}

fn type_name(dt: &DataType) -> String {
    match dt {
        DataType::Utf8 => "string".into(),
        DataType::Boolean => "bool".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::Float64 => "float64".into(),
        DataType::Float32 => "float32".into(),
        DataType::Binary => "binary".into(),
        DataType::List(f) => format!("list<{}>", type_name(f.data_type())),
        DataType::Struct(fs) => format!(
            "struct<{}>",
            fs.iter()
                .map(|f| format!("{}: {}", f.name(), type_name(f.data_type())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("{other}"),
    }
}

/// The `huggingface` key-value metadata that makes `datasets.load_dataset("parquet")`
/// decode the image struct as an `Image` feature and bools as `bool` values.
pub fn huggingface_metadata(schema: &Schema) -> String {
    let mut features = serde_json::Map::new();
    for f in schema.fields() {
        let v = match f.data_type() {
            DataType::Struct(_) if f.name() == "image" => serde_json::json!({"_type": "Image"}),
            DataType::List(inner) => serde_json::json!({
                "feature": {"dtype": hf_dtype(inner.data_type()), "_type": "Value"},
                "_type": "Sequence"
            }),
            dt => serde_json::json!({"dtype": hf_dtype(dt), "_type": "Value"}),
        };
        features.insert(f.name().clone(), v);
    }
    serde_json::json!({"info": {"features": features}}).to_string()
}

fn hf_dtype(dt: &DataType) -> &'static str {
    match dt {
        DataType::Boolean => "bool",
        DataType::Int32 => "int32",
        DataType::Int64 => "int64",
        DataType::Float32 => "float32",
        DataType::Float64 => "float64",
        DataType::Binary => "binary",
        _ => "string",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names_are_unique_and_lowercase_columns_valid() {
        let mut cols: Vec<String> = (0..N_ATTRIBUTES).map(attribute_column).collect();
        cols.sort();
        cols.dedup();
        assert_eq!(cols.len(), 40);
        assert_eq!(attribute_column(0), "5_o_clock_shadow");
        assert_eq!(attribute_by_any_name("young"), Some(39));
        assert_eq!(attribute_by_any_name("No_Beard"), Some(24));
    }

    #[test]
    fn huggingface_metadata_marks_image_and_bools() {
        let m: serde_json::Value =
            serde_json::from_str(&huggingface_metadata(&faces(false, false))).unwrap();
        assert_eq!(m["info"]["features"]["image"]["_type"], "Image");
        assert_eq!(m["info"]["features"]["smiling"]["dtype"], "bool");
        assert_eq!(m["info"]["features"]["identity"]["dtype"], "int32");
    }
}
