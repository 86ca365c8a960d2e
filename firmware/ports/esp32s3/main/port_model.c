// pocketgpt ESP32-S3 port: where the model comes from. A GGUF in the `model` data partition
// (partitions.csv, subtype 0x40) is memory-mapped through the flash cache and, when PSRAM has room,
// copied there at boot (octal PSRAM outreads quad flash); otherwise the linked array from
// `pocketgpt export-c` (firmware/ports/esp32s3/main/model/pg_model_data.c) is used in place.
#include <string.h>

#include "esp_heap_caps.h"
#include "esp_log.h"
#include "esp_partition.h"

#include "gguf.h"
#include "port.h"

#if __has_include("model/pg_model_data.h")
#include "model/pg_model_data.h"
#define HAVE_LINKED_MODEL 1
#endif

static const char *TAG = "model";
#define MODEL_SUBTYPE 0x40

// Bytes the GGUF at the start of the partition really occupies (its last tensor's end), so the
// PSRAM copy is the file's size, not the whole partition's; 0 when the header does not validate.
static size_t model_file_bytes(const void *map, size_t part_size) {
    pg_gguf g;
    pg_status st;
    if (pg_gguf_open(&g, map, part_size, &st) != PG_OK) {
        ESP_LOGE(TAG, "the model partition's GGUF is invalid: %s", st.msg);
        return 0;
    }
    size_t end = g.data_off;
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        pg_gguf_tensor t;
        pg_gguf_tensor_at(&g, i, &t);
        size_t t_end = (size_t)((const uint8_t *)t.data - (const uint8_t *)map) + (size_t)t.n_bytes;
        if (t_end > end) end = t_end;
    }
    return end;
}

esp_err_t pg_port_model_find(const void **blob, size_t *size, const char **where) {
    const esp_partition_t *part =
        esp_partition_find_first(ESP_PARTITION_TYPE_DATA, (esp_partition_subtype_t)MODEL_SUBTYPE, "model");
    if (part) {
        const void *map = NULL;
        esp_partition_mmap_handle_t handle;
        esp_err_t err = esp_partition_mmap(part, 0, part->size, ESP_PARTITION_MMAP_DATA, &map, &handle);
        size_t n = (err == ESP_OK && memcmp(map, "GGUF", 4) == 0) ? model_file_bytes(map, part->size) : 0;
        if (n > 0) {
            // copy only the file, and only when PSRAM keeps 2 MB for the KV cache and buffers after it
            void *copy = NULL;
            if (heap_caps_get_free_size(MALLOC_CAP_SPIRAM) > n + 2u * 1024 * 1024)
                copy = heap_caps_aligned_alloc(64, n, MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT);
            if (copy) {
                memcpy(copy, map, n);
                esp_partition_munmap(handle);
                *blob = copy;
                *where = "the model partition (copied to PSRAM)";
            } else {
                *blob = map;
                *where = "the model partition (mapped flash)";
            }
            *size = n;
            return ESP_OK;
        }
        if (err == ESP_OK) esp_partition_munmap(handle);
        ESP_LOGI(TAG, "the model partition holds no valid GGUF (%s)", esp_err_to_name(err));
    }
#ifdef HAVE_LINKED_MODEL
    *blob = pg_model_gguf;
    *size = pg_model_gguf_size;
    *where = "the linked array";
    return ESP_OK;
#else
    return ESP_ERR_NOT_FOUND;
#endif
}
