#!/usr/bin/env bash
# The kept build's GPU checks, then one more A/B round with DeepSeek-V3 16384.
OUT=$OUT bash scripts/device/grouped_check.sh
ROUNDS=1 VARIANTS="moe_pse2 moe" CASES="qwen3-30b-a3b:2048,4096,16384 deepseek-v3:4096,16384" OUT=$OUT bash .carry/bin/s16_ab.sh
