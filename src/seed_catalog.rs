//! `seed-catalog`: a realistic synthetic catalogue for demos, tests and benchmarks.
//!
//! Items get ASIN-like ids (`B0` and eight letters or digits), one of 30 Amazon-style main
//! categories, and a brand of that category in `raw_metadata`. The same seed gives the same
//! catalogue. The seed's own example item, `B08XXXX`, is always included.

use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

use crate::config::DatabaseArgs;
use crate::db;

#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Items (and products) to create.
    #[arg(long, default_value_t = 10_000)]
    pub items: usize,
    /// Users to create, with ids 1..=N.
    #[arg(long, default_value_t = 1_000)]
    pub users: i64,
    /// Random seed: the same seed gives the same catalogue.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Main categories and a few brands of each.
pub const CATEGORIES: [(&str, [&str; 4]); 30] = [
    ("All Electronics", ["Anker", "Sony", "Samsung", "Logitech"]),
    ("Computers", ["Dell", "Lenovo", "HP", "Asus"]),
    (
        "Cell Phones & Accessories",
        ["Apple", "Spigen", "OtterBox", "Belkin"],
    ),
    ("Home Audio & Theater", ["Bose", "Yamaha", "Denon", "JBL"]),
    ("Camera & Photo", ["Canon", "Nikon", "Fujifilm", "GoPro"]),
    ("Video Games", ["Nintendo", "PlayStation", "Xbox", "Razer"]),
    ("Books", ["Penguin", "HarperCollins", "O'Reilly", "Vintage"]),
    (
        "Movies & TV",
        ["Criterion", "Disney", "Warner Bros.", "Universal"],
    ),
    ("Digital Music", ["Sub Pop", "Blue Note", "Motown", "Warp"]),
    ("Toys & Games", ["LEGO", "Hasbro", "Mattel", "Ravensburger"]),
    ("Baby", ["Pampers", "Graco", "Chicco", "Fisher-Price"]),
    ("Beauty", ["L'Oreal", "Neutrogena", "CeraVe", "Olay"]),
    (
        "Health & Personal Care",
        ["Philips", "Oral-B", "Braun", "Omron"],
    ),
    ("Grocery", ["Lavazza", "Twinings", "Kellogg's", "Barilla"]),
    ("Pet Supplies", ["Purina", "Kong", "Pedigree", "Whiskas"]),
    (
        "Sports & Outdoors",
        ["Nike", "Coleman", "Wilson", "Under Armour"],
    ),
    (
        "Tools & Home Improvement",
        ["Bosch", "DeWalt", "Makita", "Stanley"],
    ),
    ("Automotive", ["Michelin", "Bosch Auto", "Castrol", "Thule"]),
    (
        "Arts, Crafts & Sewing",
        ["Crayola", "Faber-Castell", "Singer", "Cricut"],
    ),
    (
        "Office Products",
        ["Moleskine", "Pilot", "Fellowes", "Post-it"],
    ),
    ("Amazon Home", ["IKEA", "Rubbermaid", "OXO", "Lodge"]),
    (
        "Kitchen & Dining",
        ["KitchenAid", "Cuisinart", "Le Creuset", "Instant Pot"],
    ),
    ("Appliances", ["Whirlpool", "Dyson", "iRobot", "Ninja"]),
    (
        "Garden & Outdoor",
        ["Fiskars", "Weber", "Gardena", "Scotts"],
    ),
    (
        "Industrial & Scientific",
        ["3M", "Fluke", "Brady", "Honeywell"],
    ),
    (
        "Musical Instruments",
        ["Fender", "Gibson", "Roland", "Shure"],
    ),
    (
        "Clothing, Shoes & Jewelry",
        ["Levi's", "Adidas", "Fossil", "Clarks"],
    ),
    (
        "Luggage & Travel Gear",
        ["Samsonite", "Osprey", "Rimowa", "Eagle Creek"],
    ),
    (
        "Handmade",
        ["Etsy Makers", "Woodcraft", "Artisan Co.", "Loom & Co."],
    ),
    ("Software", ["Microsoft", "Adobe", "Intuit", "Norton"]),
];

const ADJECTIVES: [&str; 8] = [
    "Classic",
    "Pro",
    "Compact",
    "Deluxe",
    "Essential",
    "Ultra",
    "Smart",
    "Eco",
];
const NOUNS: [&str; 8] = [
    "Edition",
    "Kit",
    "Set",
    "Series",
    "Bundle",
    "Model",
    "Pack",
    "Collection",
];

/// The seed's example item, always part of the catalogue.
pub const SEED_EXAMPLE_ASIN: &str = "B08XXXX";

pub async fn run(args: &SeedArgs) -> anyhow::Result<()> {
    let pool = db::prepare(&args.database.database_url, 2).await?;
    let summary = seed(&pool, args.items, args.users, args.seed).await?;
    println!(
        "catalogue ready: {} items over {} categories, {} users",
        summary.items,
        CATEGORIES.len(),
        summary.users
    );
    Ok(())
}

#[derive(Debug, Clone, Copy)]
pub struct Seeded {
    pub items: usize,
    pub users: i64,
}

/// Inserts the catalogue; rows already there are left alone.
pub async fn seed(pool: &PgPool, items: usize, users: i64, seed: u64) -> anyhow::Result<Seeded> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rows: Vec<Product> = Vec::with_capacity(items + 1);
    rows.push(product(SEED_EXAMPLE_ASIN.to_owned(), 0, 1, &mut rng));
    for _ in 0..items {
        let asin = format!("B0{}", random_code(&mut rng));
        let category = rng.random_range(0..CATEGORIES.len());
        let brand = rng.random_range(0..4);
        rows.push(product(asin, category, brand, &mut rng));
    }
    for chunk in rows.chunks(5_000) {
        let asins: Vec<&str> = chunk.iter().map(|p| p.asin.as_str()).collect();
        let titles: Vec<&str> = chunk.iter().map(|p| p.title.as_str()).collect();
        let categories: Vec<&str> = chunk.iter().map(|p| p.category).collect();
        let metadata: Vec<String> = chunk.iter().map(|p| p.raw_metadata.to_string()).collect();
        let mut tx = pool.begin().await?;
        sqlx::query("INSERT INTO items (asin) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING")
            .bind(&asins)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO products (asin, title, main_category, raw_metadata)
             SELECT a, t, c, m::jsonb FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS p(a, t, c, m)
             ON CONFLICT (asin) DO NOTHING",
        )
        .bind(&asins)
        .bind(&titles)
        .bind(&categories)
        .bind(&metadata)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    sqlx::query("INSERT INTO users (id) SELECT generate_series(1, $1) ON CONFLICT DO NOTHING")
        .bind(users)
        .execute(pool)
        .await?;
    // Fresh statistics, so that queries joining the catalogue are planned for its real size.
    sqlx::query("ANALYZE users, items, products")
        .execute(pool)
        .await?;
    Ok(Seeded {
        items: rows.len(),
        users,
    })
}

struct Product {
    asin: String,
    title: String,
    category: &'static str,
    raw_metadata: serde_json::Value,
}

fn product(asin: String, category: usize, brand: usize, rng: &mut StdRng) -> Product {
    let (category, brands) = CATEGORIES[category];
    let brand = brands[brand];
    let title = format!(
        "{brand} {} {}",
        ADJECTIVES[rng.random_range(0..ADJECTIVES.len())],
        NOUNS[rng.random_range(0..NOUNS.len())]
    );
    let price = f64::from(rng.random_range(199..99_999)) / 100.0;
    let raw_metadata = serde_json::json!({
        "brand": brand,
        "title": title,
        "price": price,
        "rating": f64::from(rng.random_range(10..=50)) / 10.0,
    });
    Product {
        asin,
        title,
        category,
        raw_metadata,
    }
}

fn random_code(rng: &mut StdRng) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..8)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
