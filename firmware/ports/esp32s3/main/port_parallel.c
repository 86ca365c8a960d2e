// pocketgpt ESP32-S3 port: the engine's parallel-for over both cores. The calling task (core 0)
// runs task 0 while a worker pinned to core 1 runs task 1; a task notification starts the worker
// and one wakes the caller (~34 us per hand-off, so the engine only splits large matrices).
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"

#include "port.h"

typedef struct {
    TaskHandle_t worker, caller;
    pg_task_fn fn;
    void *arg;
    int n_tasks;
} pool;

static pool s_pool;

static void worker(void *p) {
    pool *P = p;
    for (;;) {
        ulTaskNotifyTake(pdTRUE, portMAX_DELAY);
        for (int i = 1; i < P->n_tasks; i += 2) P->fn(P->arg, i, P->n_tasks);
        xTaskNotifyGive(P->caller);
    }
}

static void run(void *p, pg_task_fn fn, void *arg, int n_tasks) {
    pool *P = p;
    if (n_tasks <= 1) {
        if (n_tasks == 1) fn(arg, 0, 1);
        return;
    }
    P->fn = fn;
    P->arg = arg;
    P->n_tasks = n_tasks;
    P->caller = xTaskGetCurrentTaskHandle();
    xTaskNotifyGive(P->worker);
    for (int i = 0; i < n_tasks; i += 2) fn(arg, i, n_tasks);  // even tasks here, odd ones on core 1
    ulTaskNotifyTake(pdTRUE, portMAX_DELAY);
}

esp_err_t pg_port_parallel_init(pg_parallel *par) {
    if (xTaskCreatePinnedToCore(worker, "pg_worker", 4096, &s_pool, configMAX_PRIORITIES - 2, &s_pool.worker, 1) != pdPASS)
        return ESP_ERR_NO_MEM;
    par->run = run;
    par->pool = &s_pool;
    par->n_threads = 2;
    return ESP_OK;
}
