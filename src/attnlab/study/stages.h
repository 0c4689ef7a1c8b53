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

// The pretrained model's folder of a mixer (pretrain writes it, perplexity reads it).
std::string model_dir(const std::string& dir, const std::string& mixer);
// The parameter-matched model of a mixer for a vocabulary (the zoo's calibration on the study's base).
CalibratedModel calibrated(const StudyConfig& cfg, const std::string& mixer, int64_t parameters,
                           int64_t vocab);

}  // namespace attnlab::study
