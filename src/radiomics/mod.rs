//! TODO
/// Placeholder until the radiomics module lands.
pub fn cli_extract(
    _image: &std::path::Path,
    _mask: &std::path::Path,
    _bin_width: Option<f64>,
) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!("radiomics not built yet")
}
