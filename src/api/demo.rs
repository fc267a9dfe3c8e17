//! The demo page (`/demo/`): a product grid wired to the TypeScript client, with the user's live
//! context and a re-ranked list beside it. For local use; `DEMO=false` turns it off.
//!
//! The page and its script are in `demo/`, the client's built files in
//! `clients/typescript/dist/`, both served from disk (`--demo-dir`).

use std::path::Path;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::Redirect;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tower_http::services::{ServeDir, ServeFile};

use super::{ApiError, AppState};

/// The demo's routes, serving its files from `root` (the repository).
pub fn routes(root: &Path) -> Router<AppState> {
    Router::new()
        .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
        .route_service("/demo/", ServeFile::new(root.join("demo/index.html")))
        .route_service("/demo/app.js", ServeFile::new(root.join("demo/app.js")))
        .route_service(
            "/demo/style.css",
            ServeFile::new(root.join("demo/style.css")),
        )
        .nest_service(
            "/demo/client",
            ServeDir::new(root.join("clients/typescript/dist")),
        )
        .route("/demo/products", get(products))
}

#[derive(Deserialize)]
pub struct ProductsQuery {
    /// Categories shown (default 4).
    categories: Option<i64>,
    /// Products per category (default 6).
    per_category: Option<i64>,
}

#[derive(Serialize, sqlx::FromRow)]
pub struct Product {
    asin: String,
    title: Option<String>,
    category: String,
    brand: Option<String>,
    price: Option<f64>,
}

/// A few products of each of the catalogue's largest categories, interleaved, so that
/// re-ranking by category has something to show.
async fn products(
    State(app): State<AppState>,
    Query(query): Query<ProductsQuery>,
) -> Result<Json<Vec<Product>>, ApiError> {
    let categories = query.categories.unwrap_or(4).clamp(1, 12);
    let per_category = query.per_category.unwrap_or(6).clamp(1, 24);
    let products = sqlx::query_as::<_, Product>(
        "WITH top AS (
             SELECT main_category FROM products WHERE main_category IS NOT NULL
             GROUP BY main_category ORDER BY count(*) DESC, main_category LIMIT $1
         ), ranked AS (
             SELECT p.asin, p.title, p.main_category AS category,
                    COALESCE(p.raw_metadata->>'brand', p.raw_metadata->>'store') AS brand,
                    (p.raw_metadata->>'price')::float8 AS price,
                    row_number() OVER (PARTITION BY p.main_category ORDER BY p.asin) AS n
             FROM products p JOIN top USING (main_category)
         )
         SELECT asin, title, category, brand, price FROM ranked WHERE n <= $2
         ORDER BY n, category",
    )
    .bind(categories)
    .bind(per_category)
    .fetch_all(&app.pool)
    .await
    .map_err(|error| {
        tracing::warn!(%error, "could not read the demo's products");
        ApiError::Unavailable
    })?;
    Ok(Json(products))
}
