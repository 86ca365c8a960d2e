// pocketgpt ESP32-S3 port: where the model comes from. A GGUF in the `model` data partition
// (partitions.csv, subtype 0x40) is memory-mapped through the flash cache and, when PSRAM has room,
// copied there at boot (octal PSRAM outreads quad flash); otherwise the linked array from
// `pocketgpt export-c` (firmware/ports/esp32s3/main/model/pg_model_data.c) is used in place.
#include <string.h>

#include "esp_heap_caps.h"
#include "esp_log.h"
#include "esp_partition.h"

#include "port.h"

#if __has_include("model/pg_model_data.h")
#include "model/pg_model_data.h"
#define HAVE_LINKED_MODEL 1
#endif

static const char *TAG = "model";
#define MODEL_SUBTYPE 0x40

esp_err_t pg_port_model_find(const void **blob, size_t *size, const char **where) {
    const esp_partition_t *part =
        esp_partition_find_first(ESP_PARTITION_TYPE_DATA, (esp_partition_subtype_t)MODEL_SUBTYPE, "model");
    if (part) {
        const void *map = NULL;
        esp_partition_mmap_handle_t handle;
        esp_err_t err = esp_partition_mmap(part, 0, part->size, ESP_PARTITION_MMAP_DATA, &map, &handle);
        if (err == ESP_OK && memcmp(map, "GGUF", 4) == 0) {
            // the engine validates the whole file; the partition's tail past it is never read
            size_t n = part->size;
            void *copy = heap_caps_aligned_alloc(64, n, MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT);
            if (copy && heap_caps_get_free_size(MALLOC_CAP_SPIRAM) > 2u * 1024 * 1024) {
                memcpy(copy, map, n);
                esp_partition_munmap(handle);
                *blob = copy;
                *where = "the model partition (copied to PSRAM)";
            } else {
                if (copy) heap_caps_free(copy);
                *blob = map;
                *where = "the model partition (mapped flash)";
            }
            *size = n;
            return ESP_OK;
        }
        if (err == ESP_OK) esp_partition_munmap(handle);
        ESP_LOGI(TAG, "the model partition holds no GGUF (%s)", esp_err_to_name(err));
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
