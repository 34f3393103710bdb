#pragma once
// libgrade: FNCLCC grading of soft-tissue sarcoma from H&E whole-slide images. Include this for the whole public API.
#include "grade/count.hpp"
#include "grade/error.hpp"
#include "grade/fnclcc.hpp"
#include "grade/image.hpp"
#include "grade/mitosis.hpp"
#include "grade/necrosis.hpp"
#include "grade/nuclei.hpp"
#include "grade/slide.hpp"
#include "grade/stain.hpp"
#include "grade/tissue.hpp"
#include "grade/version.hpp"
