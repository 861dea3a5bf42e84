"""Dataset loaders: every supported format normalises to the same catalog, and bad input fails clearly.

Small real files are written to tmp_path for each format; the bundled MovieLens-100K (recbole wheel)
and, when present, ../shared/data are loaded whole.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from genrec.config import DataConfig
from genrec.errors import GenrecError
from retrieval.catalog import Catalog
from retrieval.datasets import detect_format, load_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
GROUPLENS = SHARED / "ml-100k"
BEAUTY = SHARED / "amazon-seq" / "Beauty.txt"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def load(dataset: Path | str, **fields) -> Catalog:
    return load_dataset(DataConfig(dataset=str(dataset), **fields))


def attrs(catalog: Catalog, item_id: str) -> dict:
    return catalog.attributes(item_id)


def assert_histories_sorted(catalog: Catalog) -> None:
    inter = catalog.interactions
    same_user = inter["user_id"].to_numpy()[1:] == inter["user_id"].to_numpy()[:-1]
    steps = np.diff(inter["timestamp"].to_numpy())
    assert (steps[same_user] >= 0).all(), "a user's history goes back in time"
    # each user's rows are contiguous
    assert inter["user_id"].ne(inter["user_id"].shift()).sum() == inter["user_id"].nunique()


# ---------------------------------------------------------------- real MovieLens-100K, both formats


@pytest.fixture(scope="module")
def bundled() -> Catalog:
    return load("ml-100k")


@pytest.fixture(scope="module")
def grouplens() -> Catalog:
    if not (GROUPLENS / "u.data").is_file():
        pytest.skip(f"{GROUPLENS} not present")
    return load(GROUPLENS)


def test_bundled_ml100k_has_the_full_movielens_counts(bundled):
    assert detect_format("ml-100k")[0] == "recbole"
    assert len(bundled.items) == 1682
    assert bundled.interactions["user_id"].nunique() == 943
    assert len(bundled.interactions) == 100_000
    assert_histories_sorted(bundled)


def test_bundled_ml100k_items_read_like_movies(bundled):
    star_wars = bundled.items.set_index("item_id").loc["50"]
    assert star_wars["title"] == "Star Wars (1977)"
    assert star_wars["text"] == "Star Wars (1977). A 1977 Action, Adventure, Romance, Sci-Fi, War movie."
    assert attrs(bundled, "50") == {"genres": ["Action", "Adventure", "Romance", "Sci-Fi", "War"], "year": 1977}
    # RecBole's file has a broken year ("V") for this one: the title's year is used
    assert attrs(bundled, "1412")["year"] == 1995


def test_grouplens_ml100k_has_the_full_movielens_counts(grouplens):
    assert len(grouplens.items) == 1682
    assert grouplens.interactions["user_id"].nunique() == 943
    assert len(grouplens.interactions) == 100_000
    assert_histories_sorted(grouplens)
    star_wars = attrs(grouplens, "50")
    assert star_wars["release_date"] == "1977-01-01"
    assert star_wars["imdb_url"].startswith("http://us.imdb.com/")


def test_both_movielens_loaders_agree_on_ids_genres_years_and_ratings(bundled, grouplens):
    assert list(bundled.items["item_id"]) == list(grouplens.items["item_id"])
    pairs = zip(bundled.items["item_id"], bundled.items["attributes"], grouplens.items["attributes"])
    for item_id, a, b in pairs:
        a, b = json.loads(a), json.loads(b)
        assert a.get("genres") == b.get("genres"), item_id
        assert a.get("year") == b.get("year"), item_id
    key = ["user_id", "timestamp", "item_id"]
    ra = bundled.interactions.sort_values(key).reset_index(drop=True)
    rb = grouplens.interactions.sort_values(key).reset_index(drop=True)
    assert ra.equals(rb)


def test_amazon_seq_beauty_loads_whole():
    if not BEAUTY.is_file():
        pytest.skip(f"{BEAUTY} not present")
    catalog = load(BEAUTY)
    assert len(catalog.items) == 12_101
    assert catalog.interactions["user_id"].nunique() == 22_363
    assert len(catalog.interactions) == 198_502
    assert_histories_sorted(catalog)


# ---------------------------------------------------------------- GroupLens format on small files

GENRE_FILE = "".join(
    f"{g}|{i}\n"
    for i, g in enumerate(
        "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy Film-Noir "
        "Horror Musical Mystery Romance Sci-Fi Thriller War Western".split()
    )
)


def item_line(item_id: int, title: str, date: str, genres: set[int]) -> str:
    flags = "|".join("1" if i in genres else "0" for i in range(19))
    return f"{item_id}|{title}|{date}||http://imdb/{item_id}|{flags}\n"


@pytest.fixture
def small_grouplens(tmp_path) -> Path:
    folder = tmp_path / "ml"
    write(folder / "u.genre", GENRE_FILE)
    write(
        folder / "u.item",
        item_line(1, "Toy Story (1995)", "01-Jan-1995", {3, 4, 5})
        + item_line(2, "Misérables, Les (1995)", "01-Jan-1995", {8, 12})
        + item_line(3, "Taxi Driver (1976)", "16-Feb-1996", {8, 16})
        + item_line(4, "unknown", "", {0}),
        encoding="latin-1",
    )
    # user 7 rated out of time order in the file
    write(folder / "u.data", "7\t3\t4\t300\n7\t1\t5\t100\n8\t2\t1\t50\n7\t2\t3\t200\n")
    return folder


def test_grouplens_folder_is_detected_and_read(small_grouplens):
    assert detect_format(str(small_grouplens))[0] == "movielens"
    catalog = load(small_grouplens)
    assert list(catalog.items["item_id"]) == ["1", "2", "3", "4"]
    items = catalog.items.set_index("item_id")
    assert items.loc["2", "title"] == "Misérables, Les (1995)"  # Latin-1 decoded
    assert attrs(catalog, "1")["genres"] == ["Animation", "Children's", "Comedy"]
    assert attrs(catalog, "3")["year"] == 1976  # the film's year, not the 1996 re-release date
    assert attrs(catalog, "4")["genres"] == []  # "unknown" is no genre
    assert "year" not in attrs(catalog, "4")
    assert items.loc["1", "text"] == "Toy Story (1995). A 1995 Animation, Children's, Comedy movie."


def test_grouplens_histories_are_sorted_by_time(small_grouplens):
    inter = load(small_grouplens).interactions
    assert list(inter.loc[inter.user_id == "7", "item_id"]) == ["1", "2", "3"]
    assert list(inter.loc[inter.user_id == "7", "timestamp"]) == [100, 200, 300]
    assert list(inter.loc[inter.user_id == "7", "rating"]) == [5.0, 3.0, 4.0]


def test_min_rating_drops_low_ratings(small_grouplens):
    inter = load(small_grouplens, min_rating=4).interactions
    assert sorted(inter["rating"]) == [4.0, 5.0]


def test_malformed_rating_row_names_file_and_line(small_grouplens):
    lines = (small_grouplens / "u.data").read_text().splitlines()
    lines.insert(1, "")  # blank lines still count
    lines.insert(2, "9\t1\t3")
    write(small_grouplens / "u.data", "\n".join(lines) + "\n")
    with pytest.raises(GenrecError, match=r"u\.data:3: expected 4 tab-separated fields, got 3"):
        load(small_grouplens)


def test_non_numeric_timestamp_names_file_line_and_field(small_grouplens):
    write(small_grouplens / "u.data", "7\t1\t5\t100\n7\t2\t5\tyesterday\n")
    with pytest.raises(GenrecError, match=r"u\.data:2: field 'timestamp' is not an integer: 'yesterday'"):
        load(small_grouplens)


def test_duplicate_movie_id_names_file_line_and_id(small_grouplens):
    with (small_grouplens / "u.item").open("a", encoding="latin-1") as f:
        f.write(item_line(2, "Again (1990)", "01-Jan-1990", {8}))
    with pytest.raises(GenrecError, match=r"u\.item:5: duplicate item id '2' \(first on line 2\)"):
        load(small_grouplens)


def test_bad_genre_flag_names_file_and_line(small_grouplens):
    write(small_grouplens / "u.item", item_line(1, "X (1990)", "01-Jan-1990", {1}).replace("|1|", "|yes|"))
    with pytest.raises(GenrecError, match=r"u\.item:1: genre flags must be 0 or 1, got 'yes'"):
        load(small_grouplens)


def test_empty_ratings_file_is_an_error(small_grouplens):
    write(small_grouplens / "u.data", "\n")
    with pytest.raises(GenrecError, match=r"u\.data: empty file"):
        load(small_grouplens)


def test_interactions_on_unknown_items_are_dropped_with_a_warning(small_grouplens, capsys):
    with (small_grouplens / "u.data").open("a") as f:
        f.write("8\t999\t5\t60\n")
    catalog = load(small_grouplens)
    assert "999" not in set(catalog.interactions["item_id"])
    assert len(catalog.interactions) == 4
    assert "1 interactions name items not in the catalog" in " ".join(capsys.readouterr().err.split())


# ---------------------------------------------------------------- RecBole atomic files


@pytest.fixture
def small_recbole(tmp_path) -> Path:
    folder = tmp_path / "books"
    write(
        folder / "books.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "u1\tb2\t4.0\t1700000200.0\nu1\tb1\t5\t1700000100\nu2\tb1\t2\t1700000300\n",
    )
    write(
        folder / "books.item",
        "item_id:token\ttitle:token_seq\tyear:token\tgenre:token_seq\tprice:float\ttags:token_seq\tauthor:token\n"
        "b1\tThe Hobbit\t1937\tfantasy adventure\t9.5\tdragons dwarves\tTolkien\n"
        "b2\tDune\t1965\tsci-fi\t\t\tHerbert\n",
    )
    write(folder / "books.user", "user_id:token\tage:token\nu1\t30\nu2\t40\n")
    return folder


def test_recbole_folder_maps_title_year_genres_and_keeps_other_fields(small_recbole):
    assert detect_format(str(small_recbole)) == ("recbole", small_recbole / "books")
    catalog = load(small_recbole)
    items = catalog.items.set_index("item_id")
    assert items.loc["b1", "title"] == "The Hobbit (1937)"
    assert attrs(catalog, "b1") == {
        "year": 1937,
        "genres": ["fantasy", "adventure"],
        "price": 9.5,
        "tags": ["dragons", "dwarves"],
        "author": "Tolkien",
    }
    assert attrs(catalog, "b2") == {"year": 1965, "genres": ["sci-fi"], "author": "Herbert"}
    assert items.loc["b1", "text"].startswith("The Hobbit (1937). ")
    assert "Tolkien" in items.loc["b1", "text"]


def test_recbole_accepts_a_prefix_or_a_file_and_sorts_histories(small_recbole):
    for dataset in (small_recbole / "books", small_recbole / "books.inter"):
        catalog = load(dataset)
        assert list(catalog.interactions.loc[catalog.interactions.user_id == "u1", "item_id"]) == ["b1", "b2"]
        assert catalog.interactions["timestamp"].dtype == np.int64


def test_recbole_without_item_file_or_timestamps_uses_file_order(tmp_path):
    write(tmp_path / "clicks.inter", "user_id:token\titem_id:token\nu1\t9\nu1\t3\nu2\t3\n")
    catalog = load(tmp_path / "clicks")
    assert sorted(catalog.items["title"]) == ["item 3", "item 9"]
    u1 = catalog.interactions[catalog.interactions.user_id == "u1"]
    assert list(u1["item_id"]) == ["9", "3"] and list(u1["timestamp"]) == [0, 1]
    assert catalog.interactions["rating"].isna().all()


def test_recbole_other_item_id_field_name_is_found(tmp_path):
    write(tmp_path / "yelp.inter", "user_id:token\tbusiness_id:token\tstars:float\nu1\tb9\t5\n")
    write(tmp_path / "yelp.item", "business_id:token\tname:token_seq\tcity:token\nb9\tJoe's Diner\tReno\n")
    catalog = load(tmp_path / "yelp")
    assert catalog.items.iloc[0]["title"] == "Joe's Diner"
    assert list(catalog.interactions["item_id"]) == ["b9"]
    assert attrs(catalog, "b9") == {"city": "Reno"}


def test_recbole_header_without_types_is_an_error(tmp_path):
    write(tmp_path / "x.inter", "user_id\titem_id\nu1\ti1\n")
    with pytest.raises(GenrecError, match=r"x\.inter:1: header field 'user_id' is not NAME:TYPE"):
        load(tmp_path / "x")


def test_recbole_bad_float_names_file_line_and_field(small_recbole):
    with (small_recbole / "books.item").open("a") as f:
        f.write("b3\tEmma\t1815\tromance\tcheap\t\tAusten\n")
    with pytest.raises(GenrecError, match=r"books\.item:4: field 'price' \(float\) is not numeric: 'cheap'"):
        load(small_recbole)


def test_recbole_duplicate_item_id_is_an_error(small_recbole):
    with (small_recbole / "books.item").open("a") as f:
        f.write("b1\tAgain\t2000\tx\t1\t\tY\n")
    with pytest.raises(GenrecError, match=r"books\.item:4: duplicate item id 'b1' \(first on line 2\)"):
        load(small_recbole)


def test_recbole_header_only_is_an_empty_file(tmp_path):
    write(tmp_path / "e.inter", "user_id:token\titem_id:token\n")
    with pytest.raises(GenrecError, match=r"e\.inter: empty file"):
        load(tmp_path / "e")


def test_broken_recbole_install_says_how_to_fix_it(tmp_path, monkeypatch):
    # a recbole package without the example data shadows the real one
    write(tmp_path / "shadow" / "recbole" / "__init__.py", "")
    monkeypatch.syspath_prepend(str(tmp_path / "shadow"))
    with pytest.raises(GenrecError, match=r"no dataset_example/ml-100k.*pip install --no-deps"):
        load("ml-100k")


# ---------------------------------------------------------------- amazon-seq text format


def test_amazon_seq_positions_are_timestamps_and_items_have_placeholder_titles(tmp_path):
    path = write(tmp_path / "Toys.txt", "1 5 10 2\n2 10 5\n\n3 7 7\n")
    assert detect_format(str(path))[0] == "amazon-seq"
    catalog = load(path)
    assert list(catalog.items["item_id"]) == ["2", "5", "7", "10"]
    assert list(catalog.items["title"]) == ["item 2", "item 5", "item 7", "item 10"]
    user1 = catalog.interactions[catalog.interactions.user_id == "1"]
    assert list(user1["item_id"]) == ["5", "10", "2"] and list(user1["timestamp"]) == [0, 1, 2]
    assert len(catalog.interactions) == 7  # repeats are kept


def test_amazon_seq_user_without_items_names_the_line(tmp_path):
    path = write(tmp_path / "s.txt", "1 5 10\n2\n")
    with pytest.raises(GenrecError, match=r"s\.txt:2: expected a user id followed by item ids"):
        load(path)


def test_amazon_seq_repeated_user_is_an_error(tmp_path):
    path = write(tmp_path / "s.txt", "1 5 10\n2 3\n1 4\n")
    with pytest.raises(GenrecError, match=r"s\.txt:3: duplicate user id '1' \(first on line 1\)"):
        load(path)


# ---------------------------------------------------------------- generic JSONL / CSV catalog


@pytest.fixture
def generic_jsonl(tmp_path) -> Path:
    folder = tmp_path / "shop"
    rows = [
        {"id": "a", "title": "Red mug", "text": "A red ceramic mug.", "attributes": {"color": "red"},
         "image": "img/a.jpg"},
        {"id": "b", "title": "Blue mug", "attributes": {"color": "blue"}, "price": 7.5,
         "image": "https://example.org/b.png"},
        {"id": "c", "title": "Teapot", "image": "/abs/c.jpg"},
    ]  # fmt: skip
    write(folder / "items.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write(
        folder / "inter.csv",
        "user_id,item_id,timestamp,rating\n"
        "u1,b,2024-01-02T00:00:00Z,4\nu1,a,2024-01-01T00:00:00Z,5\nu2,c,2024-01-03,\nu2,zzz,2024-01-04,3\n",
    )
    return folder


def test_generic_jsonl_catalog_reads_items_and_resolves_images(generic_jsonl):
    catalog = load(generic_jsonl / "items.jsonl", interactions=str(generic_jsonl / "inter.csv"))
    items = catalog.items.set_index("item_id")
    assert items.loc["a", "image"] == str((generic_jsonl / "img" / "a.jpg").resolve())
    assert items.loc["b", "image"] == "https://example.org/b.png"
    assert items.loc["c", "image"] == "/abs/c.jpg"
    assert items.loc["a", "text"] == "A red ceramic mug."
    assert attrs(catalog, "b") == {"color": "blue", "price": 7.5}  # extra keys become attributes
    assert items.loc["b", "text"].startswith("Blue mug.")  # no text: built from title and attributes


def test_generic_image_root_overrides_the_catalog_folder(generic_jsonl, tmp_path):
    catalog = load(generic_jsonl / "items.jsonl", image_root=str(tmp_path / "pics"))
    assert catalog.items.set_index("item_id").loc["a", "image"] == str(tmp_path / "pics" / "img" / "a.jpg")


def test_generic_interactions_parse_iso_dates_and_drop_unknown_items(generic_jsonl, capsys):
    catalog = load(generic_jsonl / "items.jsonl", interactions=str(generic_jsonl / "inter.csv"))
    inter = catalog.interactions
    assert list(inter["item_id"]) == ["a", "b", "c"]
    assert list(inter["timestamp"]) == [1704067200, 1704153600, 1704240000]
    assert inter["rating"].iloc[:2].tolist() == [5.0, 4.0] and np.isnan(inter["rating"].iloc[2])
    assert "not in the catalog" in capsys.readouterr().err


def test_generic_catalog_without_interactions_warns(generic_jsonl, capsys):
    catalog = load(generic_jsonl / "items.jsonl")
    assert len(catalog.items) == 3 and catalog.interactions.empty
    assert "no interactions file" in capsys.readouterr().err


def test_generic_jsonl_bad_line_names_file_and_line(tmp_path):
    path = write(tmp_path / "items.jsonl", '{"id": "a", "title": "A"}\n{"id": "b", "title": \n')
    with pytest.raises(GenrecError, match=r"items\.jsonl:2: not valid JSON"):
        load(path)


def test_generic_jsonl_duplicate_id_names_line_and_id(tmp_path):
    path = write(tmp_path / "items.jsonl", '{"id": "a", "title": "A"}\n\n{"id": "a", "title": "B"}\n')
    with pytest.raises(GenrecError, match=r"items\.jsonl:3: duplicate item id 'a' \(first on line 1\)"):
        load(path)


def test_generic_item_without_title_is_an_error(tmp_path):
    path = write(tmp_path / "items.jsonl", '{"id": "a", "title": "A"}\n{"id": 7, "text": "no title"}\n')
    with pytest.raises(GenrecError, match=r"items\.jsonl:2: item '7' has no title"):
        load(path)


def test_generic_csv_extra_columns_become_typed_attributes(tmp_path):
    path = write(
        tmp_path / "movies.csv",
        'id,title,text,image,year,genres,rating\n1,"Alien, the film",,posters/1.jpg,1979,Horror|Sci-Fi,8.5\n',
    )
    write(tmp_path / "r.csv", "user_id,item_id,timestamp\nu,1,5\n")
    catalog = load(path, interactions=str(tmp_path / "r.csv"))
    item = catalog.items.iloc[0]
    assert item["title"] == "Alien, the film"
    assert attrs(catalog, "1") == {"year": 1979, "genres": ["Horror", "Sci-Fi"], "rating": 8.5}
    assert item["image"] == str(tmp_path / "posters" / "1.jpg")


def test_generic_csv_wrong_field_count_names_the_line(tmp_path):
    path = write(tmp_path / "items.csv", "id,title\n1,A\n2,B,extra\n")
    with pytest.raises(GenrecError, match=r"items\.csv:3: expected 2 comma-separated fields"):
        load(path)


def test_interactions_csv_bad_timestamp_names_the_line(generic_jsonl):
    write(generic_jsonl / "inter.csv", "user_id,item_id,timestamp\nu1,a,100\nu1,b,soon\n")
    with pytest.raises(GenrecError, match=r"inter\.csv:3: field 'timestamp' is not an integer: 'soon'"):
        load(generic_jsonl / "items.jsonl", interactions=str(generic_jsonl / "inter.csv"))


def test_interactions_file_passed_as_catalog_says_so(tmp_path):
    path = write(tmp_path / "inter.csv", "user_id,item_id,timestamp\nu1,a,1\n")
    with pytest.raises(GenrecError, match=r"inter\.csv:1: this looks like an interactions file.*interactions"):
        load(path)


# ---------------------------------------------------------------- Amazon Reviews 2023


@pytest.fixture
def amazon2023(tmp_path) -> Path:
    meta = [
        {"main_category": "All Beauty", "title": "Rose Face Oil", "average_rating": 4.4, "rating_number": 12,
         "features": ["Cold pressed", "30 ml"], "description": ["Light oil for dry skin."], "price": "$19.99",
         "images": [{"thumb": "t1.jpg", "large": "https://m.media-amazon.com/L1.jpg", "variant": "PT01"},
                    {"thumb": "t0.jpg", "large": "https://m.media-amazon.com/L0.jpg", "variant": "MAIN"}],
         "store": "Petal Co", "categories": ["Beauty", "Skin Care"], "details": {"Volume": "30 ml"},
         "parent_asin": "B01"},
        {"main_category": "All Beauty", "title": "Clay Mask", "price": None, "images": [{"thumb": "m.jpg"}],
         "store": None, "categories": [], "features": [], "description": [], "parent_asin": "B02"},
    ]  # fmt: skip
    reviews = [
        {"rating": 5.0, "title": "great", "text": "love it", "asin": "B01X", "parent_asin": "B01",
         "user_id": "AE1", "timestamp": 1588687728923, "verified_purchase": True},
        {"rating": 3.0, "asin": "B02", "parent_asin": "B02", "user_id": "AE1", "timestamp": 1588600000000},
        {"rating": 1.0, "asin": "B01", "parent_asin": "B01", "user_id": "AE2", "timestamp": 1600000000000},
    ]  # fmt: skip
    write(tmp_path / "meta_All_Beauty.jsonl", "".join(json.dumps(m) + "\n" for m in meta))
    with gzip.open(tmp_path / "All_Beauty.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in reviews)
    return tmp_path


def test_amazon2023_is_detected_by_content_and_read(amazon2023):
    meta = amazon2023 / "meta_All_Beauty.jsonl"
    assert detect_format(str(meta))[0] == "amazon2023"
    catalog = load(meta, reviews=str(amazon2023 / "All_Beauty.jsonl.gz"))
    items = catalog.items.set_index("item_id")
    assert items.loc["B01", "title"] == "Rose Face Oil"
    assert items.loc["B01", "image"] == "https://m.media-amazon.com/L0.jpg"  # MAIN variant, large size
    assert items.loc["B02", "image"] == str(amazon2023 / "m.jpg")  # only a thumb, relative: resolved
    text = items.loc["B01", "text"]
    assert "Skin Care" in text and "Petal Co" in text and "Cold pressed" in text and "dry skin" in text
    a = attrs(catalog, "B01")
    assert a["price"] == 19.99 and a["store"] == "Petal Co" and a["categories"] == ["Beauty", "Skin Care"]
    assert "price" not in attrs(catalog, "B02")
    inter = catalog.interactions
    assert list(inter["item_id"]) == ["B02", "B01", "B01"]  # AE1's two reviews in time order
    assert list(inter["timestamp"]) == [1588600000, 1588687728, 1600000000]  # milliseconds -> seconds
    assert list(inter["rating"]) == [3.0, 5.0, 1.0]


def test_amazon2023_reviews_given_as_the_dataset_is_explained(amazon2023):
    path = amazon2023 / "All_Beauty.jsonl"
    path.write_bytes(gzip.decompress((amazon2023 / "All_Beauty.jsonl.gz").read_bytes()))
    with pytest.raises(GenrecError, match=r"All_Beauty\.jsonl:1: this is a reviews file"):
        load(path)


def test_amazon2023_review_without_user_names_the_line(amazon2023):
    reviews = write(amazon2023 / "r.jsonl", '{"parent_asin": "B01", "user_id": "x", "timestamp": 1}\n'
                    '{"parent_asin": "B01", "timestamp": 2}\n')  # fmt: skip
    with pytest.raises(GenrecError, match=r"r\.jsonl:2: review has no 'user_id'"):
        load(amazon2023 / "meta_All_Beauty.jsonl", reviews=str(reviews))


def test_amazon2023_duplicate_parent_asin_is_an_error(amazon2023):
    meta = amazon2023 / "meta_All_Beauty.jsonl"
    with meta.open("a") as f:
        f.write(json.dumps({"title": "Again", "parent_asin": "B01"}) + "\n")
    with pytest.raises(GenrecError, match=r"meta_All_Beauty\.jsonl:3: duplicate parent_asin 'B01'"):
        load(meta)


# ---------------------------------------------------------------- what is not a dataset


def test_unknown_format_lists_the_accepted_ones(tmp_path):
    path = write(tmp_path / "data.parquet", "PAR1")
    with pytest.raises(GenrecError, match=r"not a dataset format genrec reads; accepted: 'ml-100k'.*RecBole"):
        load(path)


def test_missing_dataset_lists_the_accepted_ones(tmp_path):
    with pytest.raises(GenrecError, match=r"no such file or folder; accepted:"):
        load(tmp_path / "nope")


def test_folder_without_known_files_is_not_a_dataset(tmp_path):
    write(tmp_path / "notes.md", "hello")
    with pytest.raises(GenrecError, match=r"not a dataset format genrec reads"):
        load(tmp_path)


def test_empty_catalog_file_is_an_error(tmp_path):
    path = write(tmp_path / "items.jsonl", "\n\n")
    with pytest.raises(GenrecError, match=r"items\.jsonl: empty file"):
        load(path)


def test_min_rating_on_a_dataset_without_ratings_is_an_error(tmp_path):
    path = write(tmp_path / "s.txt", "1 2 3\n")
    with pytest.raises(GenrecError, match=r"no ratings; unset min_rating"):
        load(path, min_rating=4)
