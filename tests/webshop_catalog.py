"""A small WebShop catalog in WebShop's raw formats, written into a scratch copy of the engine, and its index.

    root = prepare_checkout(Path("../shared/third_party/webshop"), tmp / "webshop")   # copy + catalog + index

Thirty-five products over WebShop's five categories (fashion, beauty, electronics, food, furniture), most
with options (colors, sizes, flavors) and some with a price range, as the scraped records of
`items_shuffle_1000.json`; their attributes and a synthetic instruction for some (`items_ins_v2_1000.json`);
human instructions with their attributes and options (`items_human_ins.json`), among them one whose
option the product does not offer (no purchase can score 1.0) and one without attributes (the engine
skips it). The index is built as WebShop's `setup.sh` builds it: `search_engine/convert_product_file_format.py`
then `python -m pyserini.index.lucene` (the `indexes` folder, what `num_products=None` searches).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

# category, query, product category path, products: (name, attributes, options, pricing, noun)
CATALOG = {
    "fashion": [
        ("men's running shoes", "Clothing, Shoes & Jewelry › Men › Shoes › Athletic › Running", [
            ("Men's Lightweight Running Shoes Breathable Mesh Sneakers", ["rubber sole", "lightweight"],
             {"color": ["Black", "Navy Blue", "Grey"], "size": ["8", "9", "10", "11"]}, "$39.99", "running shoes"),
            ("Men's Trail Running Shoes Waterproof Hiking Sneakers", ["water resistant", "rubber sole"],
             {"color": ["Brown", "Black"], "size": ["9", "10", "11"]}, "$54.99 to $64.99", "trail shoes"),
        ]),
        ("women's t-shirts", "Clothing, Shoes & Jewelry › Women › Clothing › Tops, Tees & Blouses › T-Shirts", [
            ("Women's Cotton Crew Neck T-Shirt Short Sleeve Tee", ["machine wash", "cotton"],
             {"color": ["White", "Pink", "Light Blue"], "size": ["Small", "Medium", "Large", "X-Large"]}, "$14.99",
             "crew neck t-shirt"),
            ("Women's V Neck Long Sleeve Shirt Loose Fit Tunic Top", ["long sleeve", "loose fit"],
             {"color": ["Black", "Wine Red"], "size": ["Medium", "Large"]}, "$19.99 to $24.99", "tunic top"),
        ]),
        ("men's pants", "Clothing, Shoes & Jewelry › Men › Clothing › Pants", [
            ("Men's Slim Fit Stretch Chino Pants", ["slim fit", "machine wash"],
             {"color": ["Khaki", "Navy"], "size": ["30W x 30L", "32W x 32L", "34W x 32L"]}, "$29.99", "chino pants"),
        ]),
        ("winter hats", "Clothing, Shoes & Jewelry › Women › Accessories › Hats & Caps", [
            ("Unisex Knit Winter Beanie Hat", ["hand wash"], {"color": ["Black", "Grey", "Red"]}, "$9.99",
             "beanie hat"),
        ]),
        ("women's boots", "Clothing, Shoes & Jewelry › Women › Shoes › Boots › Ankle & Bootie", [
            ("Women's Leather Ankle Boots with Side Zipper", ["leather", "rubber sole"],
             {"color": ["Black", "Brown"], "size": ["6", "7", "8"]}, "$69.99", "ankle boots"),
        ]),
    ],
    "beauty": [
        ("face moisturizer", "Beauty & Personal Care › Skin Care › Face › Creams & Moisturizers", [
            ("Hydrating Facial Moisturizer with Hyaluronic Acid for Dry Skin", ["dry skin", "paraben free"],
             {"size": ["1.7 fl oz", "3.4 fl oz"]}, "$18.99", "face moisturizer"),
            ("Oil Free Daily Face Moisturizer SPF 30", ["oil free", "sensitive skin"], {}, "$12.49",
             "daily moisturizer"),
        ]),
        ("lip balm", "Beauty & Personal Care › Skin Care › Lips › Balms & Moisturizers", [
            ("Natural Vegan Lip Balm Set", ["natural ingredients", "cruelty free"],
             {"scent": ["Mint", "Vanilla", "Coconut"], "size": ["4 Pack", "6 Pack"]}, "$7.99", "lip balm"),
        ]),
        ("shampoo", "Beauty & Personal Care › Hair Care › Shampoo & Conditioner › Sets", [
            ("Argan Oil Shampoo and Conditioner Set Sulfate Free", ["sulfate free", "damaged hair"],
             {"size": ["16 fl oz", "32 fl oz"]}, "$21.99 to $34.99", "shampoo and conditioner set"),
        ]),
        ("lipstick", "Beauty & Personal Care › Makeup › Lips › Lipstick", [
            ("Long Lasting Matte Liquid Lipstick", ["long lasting", "cruelty free"],
             {"color": ["Ruby Red", "Nude Pink", "Berry"]}, "$8.99", "liquid lipstick"),
        ]),
        ("hair extensions", "Beauty & Personal Care › Hair Care › Hair Extensions, Wigs & Accessories › Extensions", [
            ("Clip in Hair Extensions Natural Looking Straight", ["natural looking", "long lasting"],
             {"color": ["Black", "Dark Brown", "Blonde"], "size": ["16 Inch", "20 Inch"]}, "$25.99 to $39.99",
             "clip in hair extensions"),
        ]),
        ("toothbrush", "Beauty & Personal Care › Oral Care › Toothbrushes & Accessories › Manual Toothbrushes", [
            ("Bamboo Charcoal Toothbrush Soft Bristles", ["soft bristles", "eco friendly"],
             {"size": ["4 Count", "8 Count"]}, "$6.99", "bamboo toothbrush"),
        ]),
    ],
    "electronics": [
        ("bluetooth headphones", "Electronics › Headphones, Earbuds & Accessories › Headphones › Over-Ear", [
            ("Wireless Bluetooth Over Ear Headphones with Noise Cancelling", ["noise cancelling", "long battery life"],
             {"color": ["Black", "Silver"]}, "$59.99", "over ear headphones"),
            ("True Wireless Earbuds with Charging Case", ["wireless bluetooth", "water resistant"],
             {"color": ["White", "Black"]}, "$29.99", "wireless earbuds"),
        ]),
        ("usb c cable", "Electronics › Computers & Accessories › Computer Accessories & Peripherals › Cables", [
            ("USB C Fast Charging Cable Nylon Braided", ["fast charging", "high speed"],
             {"color": ["Black", "Red"], "size": ["3 ft", "6 ft", "10 ft"]}, "$8.99 to $12.99", "usb c cable"),
        ]),
        ("power bank", "Electronics › Cell Phones & Accessories › Chargers & Power Adapters › Portable Power Banks", [
            ("Portable Power Bank 20000mAh with USB C Output", ["fast charging", "easy carry"],
             {"color": ["Black", "Blue"]}, "$32.99", "power bank"),
        ]),
        ("webcam", "Electronics › Computers & Accessories › Computer Accessories & Peripherals › Webcams", [
            ("HD Webcam 1080p with Microphone for Video Calls", ["high definition", "plug and play"], {}, "$39.99",
             "webcam"),
        ]),
        ("wireless mouse", "Electronics › Computers & Accessories › Computer Accessories & Peripherals › Mice", [
            ("Wireless Ergonomic Computer Mouse Silent Click", ["ergonomic", "silent click"],
             {"color": ["Black", "Grey", "Rose Gold"]}, "$15.99", "ergonomic mouse"),
        ]),
        ("bluetooth speaker", "Electronics › Portable Audio & Video › Portable Speakers & Docks › Portable Speakers", [
            ("Waterproof Bluetooth Shower Speaker with Suction Cup", ["waterproof", "wireless bluetooth"],
             {"color": ["Blue", "Black", "Pink"]}, "$19.99", "shower speaker"),
        ]),
    ],
    "food": [
        ("coffee beans", "Grocery & Gourmet Food › Beverages › Coffee, Tea & Cocoa › Coffee › Whole Coffee Beans", [
            ("Organic Dark Roast Whole Bean Coffee", ["organic", "dark roast"],
             {"size": ["12 Ounce", "2 Pound"]}, "$11.99 to $24.99", "whole bean coffee"),
        ]),
        ("protein bars", "Grocery & Gourmet Food › Snack Foods › Bars › Protein", [
            ("Gluten Free Protein Snack Bars Variety Pack", ["gluten free", "high protein"],
             {"flavor name": ["Chocolate Peanut Butter", "Almond", "Mixed Berry"], "size": ["12 Count", "24 Count"]},
             "$19.99", "protein bars"),
        ]),
        ("sparkling water", "Grocery & Gourmet Food › Beverages › Bottled Beverages, Water & Drink Mixes › Sparkling Water", [
            ("Sugar Free Sparkling Water Naturally Flavored", ["sugar free", "zero calorie"],
             {"flavor name": ["Lime", "Grapefruit", "Black Cherry"], "size": ["Pack of 12", "Pack of 24"]}, "$13.49",
             "sparkling water"),
        ]),
        ("honey", "Grocery & Gourmet Food › Pantry Staples › Jams, Jellies & Sweet Spreads › Honey", [
            ("Raw Unfiltered Wildflower Honey", ["raw", "non gmo"], {"size": ["16 Ounce", "32 Ounce"]}, "$12.99",
             "wildflower honey"),
        ]),
        ("green tea", "Grocery & Gourmet Food › Beverages › Coffee, Tea & Cocoa › Tea › Green", [
            ("Decaf Green Tea Bags Herbal Blend", ["caffeine free", "natural ingredients"],
             {"size": ["20 Count", "100 Count"]}, "$6.99", "green tea bags"),
        ]),
        ("potato chips", "Grocery & Gourmet Food › Snack Foods › Chips & Crisps › Potato", [
            ("Kettle Cooked Potato Chips", ["gluten free", "non gmo"],
             {"flavor name": ["Sea Salt", "Salt and Vinegar", "Jalapeno"], "size": ["Pack of 6", "Pack of 12"]},
             "$15.99", "potato chips"),
        ]),
        ("olive oil", "Grocery & Gourmet Food › Pantry Staples › Cooking & Baking › Oils › Olive", [
            ("Extra Virgin Olive Oil Cold Pressed", ["extra virgin", "cold pressed"],
             {"size": ["500 ml", "1 Liter"]}, "$14.99 to $22.99", "olive oil"),
        ]),
    ],
    "furniture": [
        ("accent chair", "Home & Kitchen › Furniture › Living Room Furniture › Chairs", [
            ("Mid Century Modern Accent Chair with Wooden Legs", ["mid century", "easy assemble"],
             {"color": ["Grey", "Navy Blue", "Mustard Yellow"]}, "$129.99", "accent chair"),
            ("Upholstered Velvet Accent Chair Armchair", ["living room", "velvet"],
             {"color": ["Green", "Pink"]}, "$149.99 to $189.99", "velvet armchair"),
        ]),
        ("bookshelf", "Home & Kitchen › Furniture › Home Office Furniture › Bookcases", [
            ("5 Tier Industrial Bookshelf Metal Frame", ["easy assemble", "storage space"],
             {"color": ["Rustic Brown", "Black Oak"]}, "$79.99", "industrial bookshelf"),
        ]),
        ("standing desk", "Home & Kitchen › Furniture › Home Office Furniture › Desks", [
            ("Height Adjustable Electric Standing Desk", ["height adjustable", "easy assemble"],
             {"color": ["Black", "White"], "size": ["40 x 24 Inch", "48 x 24 Inch", "55 x 28 Inch"]},
             "$199.99 to $259.99", "standing desk"),
        ]),
        ("mattress topper", "Home & Kitchen › Bedding › Mattress Pads & Toppers › Mattress Toppers", [
            ("Memory Foam Mattress Topper with Cooling Gel", ["memory foam", "cooling gel"],
             {"size": ["Twin", "Full", "Queen", "King"]}, "$89.99 to $139.99", "mattress topper"),
        ]),
        ("coffee table", "Home & Kitchen › Furniture › Living Room Furniture › Tables › Coffee Tables", [
            ("Round Wood Coffee Table for Living Room", ["living room", "solid wood"],
             {"color": ["Walnut", "White"]}, "$109.99", "coffee table"),
        ]),
        ("nightstand", "Home & Kitchen › Furniture › Bedroom Furniture › Nightstands", [
            ("Bedside Nightstand with Drawer and Charging Station", ["storage space", "charging station"],
             {"color": ["White", "Black", "Grey"]}, "$59.99", "nightstand"),
        ]),
    ],
}

UNSATISFIABLE_OPTION = "purple"
"""The option of the one human instruction no product offers (the over-ear headphones come in black and silver)."""


def products() -> list[dict]:
    """The catalog's products, with asins `B0WSC00001`... in the order of `CATALOG`."""
    out = []
    for category, queries in CATALOG.items():
        for query, product_category, items in queries:
            for name, attributes, options, pricing, noun in items:
                out.append({
                    "asin": f"B0WSC{len(out) + 1:05d}", "category": category, "query": query,
                    "product_category": product_category, "name": name, "attributes": attributes,
                    "options": options, "pricing": pricing, "noun": noun,
                })
    return out


def scraped_record(p: dict) -> dict:
    """One product as `items_shuffle_1000.json` holds it (the scraped page's fields the engine reads)."""
    return {
        "asin": p["asin"],
        "name": p["name"],
        "full_description": f"{p['name']}. Made to last, with {' and '.join(p['attributes'])} for everyday use.",
        "small_description": [f"{a.capitalize()}" for a in p["attributes"]] + [f"Great {p['noun']} for the price"],
        "pricing": p["pricing"],
        "customization_options": {
            name: [{"value": v, "image": None} for v in values] for name, values in p["options"].items()
        } or None,
        "images": [f"https://images.example/{p['asin']}.jpg"],
        "category": p["category"],
        "query": p["query"],
        "product_category": p["product_category"],
        "brand": "Acme",
        "product_information": {},
        "average_rating": 4.5,
    }


def _values(p: dict, k: int) -> list[str]:
    """One value per option group, the k-th (cycling): what a shopper asks for, lowercased as the engine keeps it."""
    return [values[k % len(values)].lower() for values in p["options"].values()]


def human_instructions(items: list[dict]) -> dict[str, list[dict]]:
    """`items_human_ins.json`: asin -> instructions written as WebShop's annotators did."""
    out: dict[str, list[dict]] = {}
    for i, p in enumerate(items):
        for k in range(2 if i % 3 == 0 else 1):
            attrs = p["attributes"][: 1 + (i + k) % 2]
            opts = _values(p, i + k)
            text = f"i am looking for {' and '.join(attrs)} {p['noun']}"
            if opts:
                text += " in " + ", ".join(opts)
            out.setdefault(p["asin"], []).append(
                {"instruction": text + ".", "instruction_attributes": attrs, "instruction_options": opts}
            )
    headphones = next(p for p in items if p["noun"] == "over ear headphones")
    out[headphones["asin"]].append({
        "instruction": f"i want noise cancelling over ear headphones in {UNSATISFIABLE_OPTION}.",
        "instruction_attributes": ["noise cancelling"], "instruction_options": [UNSATISFIABLE_OPTION],
    })
    out[items[-1]["asin"]].append(  # no attributes: the engine skips such an instruction
        {"instruction": "i need something for my bedroom.", "instruction_attributes": [], "instruction_options": []}
    )
    return out


def attribute_records(items: list[dict]) -> dict[str, dict]:
    """`items_ins_v2_1000.json`: every product's attributes; a synthetic instruction for every third one."""
    out = {}
    for i, p in enumerate(items):
        rec: dict = {"attributes": list(p["attributes"])}
        if i % 3 == 1:
            rec["instruction"] = f"i need {p['attributes'][0]} {p['noun']}"
            rec["instruction_attributes"] = p["attributes"][:1]
        out[p["asin"]] = rec
    return out


def write_catalog(root: Path) -> dict:
    """Write the three data files under `<root>/data/`; returns counts."""
    items = products()
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    human = human_instructions(items)
    files = {
        "items_shuffle_1000.json": [scraped_record(p) for p in items],
        "items_ins_v2_1000.json": attribute_records(items),
        "items_human_ins.json": human,
    }
    for name, obj in files.items():
        (data / name).write_text(json.dumps(obj, indent=1))
    return {"products": len(items), "human_instructions": sum(len(v) for v in human.values())}


def build_index(root: Path, python: str = sys.executable) -> None:
    """WebShop's own indexing: convert the products to documents, then pyserini's Lucene indexer."""
    engine = root / "search_engine"
    for d in ("resources", "resources_100", "resources_1k", "resources_100k"):
        (engine / d).mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run([python, "convert_product_file_format.py"], cwd=engine, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    subprocess.run(
        [python, "-m", "pyserini.index.lucene", "--collection", "JsonCollection", "--input", "resources",
         "--index", "indexes", "--generator", "DefaultLuceneDocumentGenerator", "--threads", "1",
         "--storePositions", "--storeDocvectors", "--storeRaw"],
        cwd=engine, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def copy_engine(src: Path, dst: Path) -> Path:
    """A writable copy of a WebShop checkout (the shared one is read-only), without data or indexes."""
    skip = shutil.ignore_patterns("data", "indexes*", "resources*", "__pycache__", "user_session_logs")
    shutil.copytree(src, dst, ignore=skip, copy_function=shutil.copyfile)
    for d, _, _ in os.walk(dst):
        os.chmod(d, os.stat(d).st_mode | stat.S_IWUSR)
    return dst


def prepare_checkout(src: Path, dst: Path) -> Path:
    """`src` copied to `dst`, the catalog written there and its index built: a usable WebShop checkout."""
    copy_engine(src, dst)
    write_catalog(dst)
    build_index(dst)
    return dst


if __name__ == "__main__":
    out = prepare_checkout(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"WebShop checkout with the test catalog: {out}")
