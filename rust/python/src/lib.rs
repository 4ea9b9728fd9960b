//! `tokenloom._core`: the compiled module behind the `tokenloom` package.
//! Thin: argument conversion, GIL release, numpy views, error mapping.

use pyo3::prelude::*;

mod cli;
mod detach;
mod dicts;
mod errors;
mod knn;
mod loader;
mod order;
mod order_parts;
mod progress;
mod remote;
mod select;
mod shard;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    m.add_class::<shard::PyDataset>()?;
    m.add_function(wrap_pyfunction!(shard::open_dataset, m)?)?;
    m.add_class::<shard::MappedView>()?;
    m.add_class::<shard::PyDatasetWriter>()?;
    m.add_class::<shard::PyDatasetLock>()?;
    m.add_class::<loader::PyStream>()?;
    m.add_class::<loader::PyLoader>()?;
    m.add_class::<select::PySelector>()?;
    m.add_function(wrap_pyfunction!(select::default_alpha, m)?)?;
    m.add("SELECT_RULES", tokenloom_core::select::NAMES.to_vec())?;
    m.add("ORDER_DEFAULTS", order::order_defaults(m.py())?)?;
    m.add("LOADER_DEFAULTS", loader::loader_defaults(m.py())?)?;
    m.add_function(wrap_pyfunction!(loader::batch_dtype, m)?)?;
    m.add(
        "DEFAULT_CALIBRATION",
        tokenloom_core::select::DEFAULT_CALIBRATION,
    )?;
    m.add_function(wrap_pyfunction!(loader::write_order, m)?)?;
    m.add_function(wrap_pyfunction!(cli::run_cli, m)?)?;
    m.add_function(wrap_pyfunction!(order::order_dataset, m)?)?;
    m.add_function(wrap_pyfunction!(order::read_order, m)?)?;
    m.add_function(wrap_pyfunction!(order::score_order, m)?)?;
    m.add_function(wrap_pyfunction!(order::write_report_png, m)?)?;
    m.add_function(wrap_pyfunction!(order_parts::order_ivf_defaults, m)?)?;
    m.add_function(wrap_pyfunction!(order_parts::order_frequencies, m)?)?;
    m.add_function(wrap_pyfunction!(order_parts::order_idf, m)?)?;
    m.add_function(wrap_pyfunction!(order_parts::order_embed_part, m)?)?;
    m.add_function(wrap_pyfunction!(order_parts::order_centroids, m)?)?;
    m.add_function(wrap_pyfunction!(order_parts::order_assign_part, m)?)?;
    m.add_function(wrap_pyfunction!(order_parts::order_list_counts, m)?)?;
    m.add_function(wrap_pyfunction!(order_parts::order_plan_groups, m)?)?;
    m.add_function(wrap_pyfunction!(order_parts::order_knn_group, m)?)?;
    m.add_function(wrap_pyfunction!(order_parts::order_finish_staged, m)?)?;
    m.add_function(wrap_pyfunction!(order_parts::order_work_dir, m)?)?;
    m.add_function(wrap_pyfunction!(order_parts::order_seal, m)?)?;
    m.add_function(wrap_pyfunction!(order_parts::order_check_sealed, m)?)?;
    m.add_function(wrap_pyfunction!(order_parts::order_read_knn, m)?)?;
    m.add_function(wrap_pyfunction!(order::report_summary, m)?)?;
    m.add_function(wrap_pyfunction!(knn::knn_graph, m)?)?;
    m.add_function(wrap_pyfunction!(shard::write_sources, m)?)?;
    m.add_function(wrap_pyfunction!(shard::merge_datasets, m)?)?;
    m.add_function(wrap_pyfunction!(remote::upload_dataset, m)?)?;
    m.add_function(wrap_pyfunction!(remote::staging_dir, m)?)?;
    m.add_function(wrap_pyfunction!(remote::is_url, m)?)?;
    Ok(())
}
