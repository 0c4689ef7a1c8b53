// TensorBoard event files, written without TensorFlow: TFRecord framing around hand-encoded Event protos.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace attnlab::report {

namespace fs = std::filesystem;

// Writes scalars to `<dir>/events.out.tfevents.<unix seconds>.<hostname>` (TensorBoard's name; a numeric
// suffix is added if that file exists). The first record holds file_version "brain.Event:2", as TensorBoard
// expects. Every add is flushed to the OS at once, so a crash loses nothing already added. Thread-safe.
class EventWriter {
 public:
  explicit EventWriter(const fs::path& dir);
  ~EventWriter();
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  // One scalar at `step`; wall_time in seconds since the Unix epoch (now when omitted).
  void add_scalar(const std::string& tag, double value, int64_t step);
  void add_scalar(const std::string& tag, double value, int64_t step, double wall_time);
  // Several scalars of one step in one event (e.g. train/loss and train/lr).
  void add_scalars(const std::vector<std::pair<std::string, double>>& values, int64_t step);

  const fs::path& path() const { return path_; }
  // Closes the file; later adds throw. The destructor closes too.
  void close();

 private:
  void write_event(const std::string& event);
  fs::path path_;
  std::FILE* file_ = nullptr;
  std::mutex mutex_;
};

// A scalar as read back from an event file.
struct ScalarEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::string tag;
  float value = 0;
};

struct EventFile {
  std::string file_version;  // from the first event that has one ("brain.Event:2")
  size_t records = 0;        // every record, the file-version one included
  std::vector<ScalarEvent> scalars;
};

// Reads an event file: checks the framing and both CRCs of every record (errors name the file, the record
// and its byte offset) and decodes the simple_value scalars; other events and values are skipped.
EventFile read_events(const fs::path& path);

// The TFRecord framing of one record: uint64 length (little-endian), uint32 masked CRC-32C of those 8
// bytes, the data, uint32 masked CRC-32C of the data.
std::string tfrecord_frame(std::string_view data);

// Seconds since the Unix epoch, with microseconds.
double unix_time_now();

}  // namespace attnlab::report
