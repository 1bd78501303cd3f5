//! Planning speed of the balance strategies on the full CelebA train split
//! (162,770 -> 325,540 rows) including the Parquet write, `rerank_every = 1`.
//! Run: `AUGMENT_CELEBA_DIR=... cargo bench --profile dev --bench balance`.

use std::path::PathBuf;
use std::time::Instant;

use augment::data::celeba::{self, Partition};
use augment::stages::balance::{self, Config};

fn main() -> anyhow::Result<()> {
    let Some(root) = std::env::var_os("AUGMENT_CELEBA_DIR").map(PathBuf::from) else {
        eprintln!("SKIPPED: set AUGMENT_CELEBA_DIR to a CelebA folder");
        return Ok(());
    };
    let attrs = celeba::parse_attributes(&root.join("list_attr_celeba.txt"))?;
    let (ids, sources): (Vec<String>, Vec<u64>) = attrs
        .image_ids
        .iter()
        .zip(&attrs.labels)
        .filter(|(id, _)| celeba::official_partition(id) == Some(Partition::Train))
        .map(|(id, l)| (id.clone(), *l))
        .unzip();
    println!("balance benchmark: {} train rows", sources.len());
    let dir = tempfile::tempdir()?;
    for strategy in ["random_doubling", "dynamic_balancing", "ml_ros", "erase"] {
        let c: Config = toml::from_str(&format!("strategy = \"{strategy}\"\nsize = 2.0"))?;
        let mut best_plan = f64::MAX;
        let mut best_total = f64::MAX;
        let mut rows = 0;
        for _ in 0..3 {
            let t = Instant::now();
            let (plan, _) = balance::plan(&c, &sources, 0, 64);
            let planned = t.elapsed().as_secs_f64();
            rows = balance::write_plan(
                &dir.path().join("plan.parquet"),
                &plan,
                &ids,
                &sources,
                &balance::group_masks(),
                &[],
            )?;
            best_plan = best_plan.min(planned);
            best_total = best_total.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{strategy:<18} {rows} rows: plan {best_plan:.3} s, plan + Parquet write {best_total:.3} s"
        );
    }
    Ok(())
}
