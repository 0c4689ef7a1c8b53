// The study's stages (study.h lists them). Each writes its CSV under <dir>/results atomically and returns
// false when it was interrupted (Ctrl-C) before finishing.
#pragma once

#include <string>

#include "attnlab/model/calibrate.h"
#include "attnlab/study/study.h"

namespace attnlab::study {

bool stage_efficiency(const StudyConfig& cfg, const std::string& dir);
bool stage_memory(const StudyConfig& cfg, const std::string& dir);
bool stage_scaling(const StudyConfig& cfg, const std::string& dir);
bool stage_latency(const StudyConfig& cfg, const std::string& dir);
bool stage_profile(const StudyConfig& cfg, const std::string& dir);
bool stage_report(const StudyConfig& cfg, const std::string& dir);

// The pretrained model's folder of an entry, models/<label>/ (pretrain writes it, perplexity reads it).
std::string model_dir(const std::string& dir, const std::string& label);
// The model of an entry of study.mixers for a vocabulary (model.vocab_size set): parameter-matched to
// `parameters` by the zoo's calibration on the entry's base, or, for a variant that fixes the shape
// (entry.fixed_shape), as given, with `error` its distance from `parameters`.
CalibratedModel calibrated(const StudyEntry& entry, int64_t parameters, int64_t vocab);
// The same by name (a registered mixer or a variant label).
CalibratedModel calibrated(const StudyConfig& cfg, const std::string& name, int64_t parameters,
                           int64_t vocab);

}  // namespace attnlab::study
