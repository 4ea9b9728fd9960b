//! In-context ordering of documents: nearest-neighbour graphs over document embeddings.

mod kmeans;
pub mod knn;
mod topk;
