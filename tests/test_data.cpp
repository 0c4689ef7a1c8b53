// Data: every text source, the split by document, the tokenizer round trip, batches, and bad input.
#include <gtest/gtest.h>

#include "attnlab/core/error.h"
#include "attnlab/data/batches.h"
#include "attnlab/data/corpus.h"
#include "attnlab/data/text.h"
#include "attnlab/data/tokenizer.h"
#include "support/helpers.h"

using namespace attnlab;
using attnlab::testing::TempDir;
using attnlab::testing::write_text;

TEST(Sources, TxtJsonlParquetAndDirectories) {
  TempDir dir;
  write_text(dir / "a.txt", "hello world\n");
  write_text(dir / "b.jsonl", "{\"text\": \"first doc\"}\n\n{\"text\": \"second \\u00e9\", \"id\": 2}\n");
  auto txt = read_documents(dir / "a.txt");
  ASSERT_EQ(txt.size(), 1u);
  EXPECT_EQ(txt[0].text, "hello world\n");
  auto jsonl = read_documents(dir / "b.jsonl");
  ASSERT_EQ(jsonl.size(), 2u);
  EXPECT_EQ(jsonl[1].text, "second \xc3\xa9");
  EXPECT_EQ(jsonl[1].name, "b.jsonl:3");
  auto all = read_documents(dir.path().string());  // a directory: files sorted by name
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].name, "a.txt");
  auto pq = read_documents(attnlab::testing::repo_path("tests/data/wikitext2_valid.parquet"));
  ASSERT_EQ(pq.size(), 1u);
  EXPECT_EQ(pq[0].text.rfind(" \n = Homarus gammarus = \n", 0), 0u);
  EXPECT_GT(pq[0].text.size(), 1000000u);
}

TEST(Sources, BadInputIsNamed) {
  TempDir dir;
  EXPECT_ERROR_WITH(read_documents(dir / "missing.txt"), "missing.txt", "does not exist");
  write_text(dir / "empty.txt", "");
  EXPECT_ERROR_WITH(read_documents(dir / "empty.txt"), "empty.txt", "empty");
  write_text(dir / "bin.txt", std::string("ok\xff\xfe", 4));
  EXPECT_ERROR_WITH(read_documents(dir / "bin.txt"), "bin.txt", "UTF-8", "0xff", "offset 2");
  write_text(dir / "trunc.txt", std::string("caf\xc3", 4));
  EXPECT_ERROR_WITH(read_documents(dir / "trunc.txt"), "truncated UTF-8");
  write_text(dir / "x.jsonl", "{\"txt\": 1}\n");
  EXPECT_ERROR_WITH(read_documents(dir / "x.jsonl"), "x.jsonl:1", "\"text\"");
  write_text(dir / "y.jsonl", "not json\n");
  EXPECT_ERROR_WITH(read_documents(dir / "y.jsonl"), "y.jsonl:1", "JSON");
  write_text(dir / "z.csv", "a,b\n");
  EXPECT_ERROR_WITH(read_documents(dir / "z.csv"), ".txt, .jsonl or .parquet");
  TempDir empty_dir;
  write_text(empty_dir / "notes.md", "x");
  EXPECT_ERROR_WITH(read_documents(empty_dir.path().string()), "holds no .txt");
  // A truncated parquet file is named.
  std::string pq = attnlab::testing::repo_path("tests/data/wikitext2_valid.parquet");
  std::ifstream in(pq, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  write_text(dir / "cut.parquet", bytes.substr(0, bytes.size() / 2));
  EXPECT_ERROR_WITH(read_documents(dir / "cut.parquet"), "cut.parquet");
}

TEST(Split, ByDocumentIsDeterministicAndDisjoint) {
  std::vector<Document> docs;
  for (int i = 0; i < 40; ++i)
    docs.push_back({"doc" + std::to_string(i) + ".txt", "text " + std::to_string(i)});
  auto a = split_documents(docs, 0.1);
  auto b = split_documents(docs, 0.1);
  ASSERT_EQ(a.val.size(), 4u);
  ASSERT_EQ(a.train.size(), 36u);
  for (size_t i = 0; i < a.val.size(); ++i) EXPECT_EQ(a.val[i].name, b.val[i].name);
  for (const auto& v : a.val)
    for (const auto& t : a.train) EXPECT_NE(v.name, t.name);
  // Adding a document does not move the others between splits (membership hangs on the name's hash
  // order, so at most the boundary shifts by one).
  auto one = split_documents({{"only.txt", "abcdefghij"}}, 0.2);
  EXPECT_EQ(one.train[0].text, "abcdefgh");
  EXPECT_EQ(one.val[0].text, "ij");
}

TEST(Tokenizer, RoundTripUnkAndSave) {
  std::string text = "the cat sat on the mat \xc3\xa9\xe2\x80\x94!";
  auto tok = CharTokenizer::train(text, 5000);
  auto ids = tok.encode(text);
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_EQ(static_cast<int64_t>(tok.chars().size()) + 1, tok.vocab_size());
  EXPECT_EQ(tok.chars()[0], U' ');  // the most frequent character gets id 1
  auto unk = tok.encode("z");
  EXPECT_EQ(unk[0], CharTokenizer::kUnk);
  auto small = CharTokenizer::train(text, 3);
  EXPECT_EQ(small.vocab_size(), 4);
  TempDir dir;
  tok.save(dir / "tok.json");
  auto back = CharTokenizer::load(dir / "tok.json");
  EXPECT_TRUE(back == tok);
  write_text(dir / "bad.json", "{\"type\": \"bpe\"}");
  EXPECT_ERROR_WITH(CharTokenizer::load(dir / "bad.json"), "bad.json", "char");
}

TEST(Batches, WindowsAreShiftedAndSeeded) {
  std::vector<int32_t> toks(100);
  for (int i = 0; i < 100; ++i) toks[static_cast<size_t>(i)] = i;
  TokenStream s(toks, "training");
  std::mt19937_64 r1(7), r2(7);
  auto st1 = s.random_starts(r1, 4, 10), st2 = s.random_starts(r2, 4, 10);
  EXPECT_EQ(st1, st2);
  auto [x, y] = s.windows(st1, 10);
  EXPECT_EQ(x.sizes(), torch::IntArrayRef({4, 10}));
  EXPECT_TRUE(torch::equal(y.narrow(1, 0, 9), x.narrow(1, 1, 9)));
  EXPECT_EQ(x[0][0].item<int64_t>(), st1[0]);
  auto even = s.even_starts(3, 10);
  EXPECT_EQ(even.front(), 0);
  EXPECT_EQ(even.back(), 89);
  EXPECT_ERROR_WITH(s.windows({0}, 100), "seq_len is 100", "101 tokens", "training split has only 100");
}

TEST(Corpus, SeqLenLongerThanDataIsAnError) {
  TempDir dir;
  write_text(dir / "a.txt", std::string(300, 'a'));
  write_text(dir / "b.txt", std::string(20, 'b'));
  DataOptions opt;
  opt.path = dir.path().string();
  opt.val_fraction = 0.5;
  opt.seq_len = 64;
  EXPECT_ERROR_WITH(load_corpus(opt), "seq_len is 64", "split has only");
}

TEST(Corpus, UnigramBaselineMatchesEntropy) {
  // Two symbols, equally frequent: the add-one smoothed unigram cross-entropy is close to log(2) on the
  // same distribution (plus the unused <unk> mass).
  std::vector<int32_t> t;
  for (int i = 0; i < 10000; ++i) t.push_back(1 + i % 2);
  TokenStream s(t, "x");
  double ce = unigram_cross_entropy(s, s, 3);
  EXPECT_NEAR(ce, std::log(2.0), 1e-3);
}
