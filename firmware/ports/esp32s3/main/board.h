// pocketgpt ESP32-S3 board: every pin in one place.
//
// The reference wiring is an ESP32-S3 DevKitC-1 (N16R8) on a breadboard with an INMP441-class I2S
// MEMS microphone and a MAX98357A-class I2S class-D amplifier, each on its own I2S controller
// (the microphone talks 32-bit slots at 16 kHz, the amplifier 16-bit at the relay's 24 kHz, so
// they cannot share clocks). Change the numbers here for another board; nothing else names a pin.
// GPIO 26-37 belong to the octal PSRAM/flash on N16R8 modules and GPIO 19/20 to USB: avoid them.
#pragma once

#include "driver/gpio.h"
#include "driver/i2s_types.h"

// INMP441 microphone: L/R tied to GND (left slot), VDD 3.3 V
#define BOARD_MIC_I2S I2S_NUM_0
#define BOARD_MIC_SCK GPIO_NUM_5   // bit clock (INMP441 SCK)
#define BOARD_MIC_WS GPIO_NUM_4    // word select (INMP441 WS)
#define BOARD_MIC_SD GPIO_NUM_6    // data out of the microphone (INMP441 SD)
// 24 significant bits arrive left-aligned in a 32-bit slot; shifting right by 14 (not 16) keeps
// 12 dB of gain: speech at arm's length then reaches a usable level for the relay's recognizer
#define BOARD_MIC_SHIFT 14

// MAX98357A amplifier: GAIN floating (9 dB), SD_MODE to 3.3 V through the module's resistor
#define BOARD_SPK_I2S I2S_NUM_1
#define BOARD_SPK_BCLK GPIO_NUM_15 // MAX98357A BCLK
#define BOARD_SPK_LRC GPIO_NUM_16  // MAX98357A LRC
#define BOARD_SPK_DIN GPIO_NUM_7   // MAX98357A DIN (data into the amplifier)
#define BOARD_SPK_SD GPIO_NUM_NC   // a GPIO here drives SD_MODE (high: on) to mute between replies
#define BOARD_SPK_BUFFER_MS 250    // decoded audio queued ahead of the DMA (internal RAM)

// push-to-talk: the BOOT button (GPIO0, pulled up, low while pressed). It is a strapping pin: held
// at reset it enters the ROM download mode, which is harmless and how boards are flashed anyway.
#define BOARD_PTT_GPIO GPIO_NUM_0
#define BOARD_PTT_ACTIVE_LEVEL 0
