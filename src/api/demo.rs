//! The demo page (`/demo/`): a product grid wired to the TypeScript client, with the user's live
//! context and a re-ranked list beside it. For local use; `DEMO=false` turns it off.
//!
//! The page and its script (`demo/`) and the client's built files (`clients/typescript/dist/`)
//! are built into the binary, so a copied binary serves the demo too. Its routes sit under the
//! API's limits (requests at once, time per request), and the product list, an aggregate query,
//! is cached for a minute.
//!
//! Its Segment mode (`/demo/?tracking=segment`) tracks through Segment's browser SDK instead of
//! our client, sent to our Segment routes; the SDK's files come from the directory
//! `DEMO_SEGMENT_SDK` names (its npm package's build), served at
//! `/demo/segment/analytics-next/bundles/`, where the SDK looks for the parts it loads later.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use sqlx::PgPool;

use super::{ApiError, AppState};
use crate::event::InvalidEvent;

#[derive(rust_embed::Embed)]
#[folder = "demo/"]
struct Page;

#[derive(rust_embed::Embed)]
#[folder = "clients/typescript/dist/"]
#[include = "*.js"]
struct Client;

/// The product lists served, by (categories, per category), for a minute.
type ProductCache = moka::future::Cache<(i64, i64), Arc<Vec<Product>>>;

#[derive(Clone)]
struct Demo {
    pool: PgPool,
    products: ProductCache,
    segment_sdk: Option<Arc<PathBuf>>,
}

/// The file of Segment's browser SDK the page loads first (the others it loads itself).
pub const SEGMENT_SDK_ENTRY: &str = "index.js";

/// The largest file of the SDK served (its entry is about 400 KB).
const MAX_SDK_FILE_BYTES: u64 = 8 << 20;

/// The demo's routes.
pub fn routes(pool: PgPool, segment_sdk: Option<PathBuf>) -> Router<AppState> {
    let demo = Demo {
        pool,
        products: ProductCache::builder()
            .max_capacity(12 * 24)
            .time_to_live(Duration::from_secs(60))
            .build(),
        segment_sdk: segment_sdk.map(Arc::new),
    };
    Router::new()
        .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
        .route("/demo/", get(|| async { file::<Page>("index.html") }))
        .route("/demo/products", get(products))
        .route(
            "/demo/client/{file}",
            get(|name: FileName| async move { file::<Client>(&name.0) }),
        )
        .route(
            "/demo/segment/analytics-next/bundles/{file}",
            get(segment_sdk_file),
        )
        .route(
            "/demo/{file}",
            get(|name: FileName| async move { file::<Page>(&name.0) }),
        )
        .with_state(demo)
}

/// A file's name from the path; one that is not UTF-8 once percent-decoded names no file.
struct FileName(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for FileName {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let name = Path::<String>::from_request_parts(parts, state).await;
        Ok(FileName(name.map(|Path(name)| name).unwrap_or_default()))
    }
}

/// One built-in file, with its content type; 404 for a name it does not have.
fn file<Files: rust_embed::Embed>(name: &str) -> Response {
    let Some(file) = Files::get(name) else {
        return ApiError::NotFound(format!("/demo/{name}")).into_response();
    };
    let content_type = match name.rsplit_once('.').map(|(_, extension)| extension) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    };
    ([(header::CONTENT_TYPE, content_type)], file.data).into_response()
}

/// A file of Segment's browser SDK, from `DEMO_SEGMENT_SDK`: only a plain `.js` name (no path),
/// so nothing else of the directory, or outside it, is reachable.
async fn segment_sdk_file(State(demo): State<Demo>, name: FileName) -> Response {
    let name = name.0;
    let plain = !name.starts_with('.')
        && name.ends_with(".js")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    let not_found = || ApiError::NotFound(format!("/demo/segment/analytics-next/bundles/{name}"));
    let Some(dir) = demo.segment_sdk.as_deref() else {
        return ApiError::NotFound(
            "Segment's browser SDK: start the service with DEMO_SEGMENT_SDK (the dist/umd directory of @segment/analytics-next)".to_owned(),
        )
        .into_response();
    };
    if !plain {
        return not_found().into_response();
    }
    let path = dir.join(&name);
    match tokio::fs::metadata(&path).await {
        Ok(meta) if meta.is_file() && meta.len() <= MAX_SDK_FILE_BYTES => {}
        _ => return not_found().into_response(),
    }
    match tokio::fs::read(&path).await {
        Ok(data) => (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            data,
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "could not read a file of Segment's SDK");
            not_found().into_response()
        }
    }
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
    State(demo): State<Demo>,
    query: Result<Query<ProductsQuery>, QueryRejection>,
) -> Result<Json<Arc<Vec<Product>>>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::InvalidEvent(InvalidEvent::invalid(
            "query",
            format!(
                "categories and per_category must be whole numbers ({})",
                rejection.body_text()
            ),
        ))
    })?;
    let categories = query.categories.unwrap_or(4).clamp(1, 12);
    let per_category = query.per_category.unwrap_or(6).clamp(1, 24);
    let read = read_products(&demo.pool, categories, per_category);
    let products = demo
        .products
        .try_get_with((categories, per_category), read)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "could not read the demo's products");
            ApiError::Unavailable
        })?;
    Ok(Json(products))
}

async fn read_products(
    pool: &PgPool,
    categories: i64,
    per_category: i64,
) -> Result<Arc<Vec<Product>>, sqlx::Error> {
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
    .fetch_all(pool)
    .await?;
    Ok(Arc::new(products))
}
