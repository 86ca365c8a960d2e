// pocketgpt ESP32-S3 port: console on USB-Serial-JTAG and UART0 together. Two reader tasks push
// bytes into one stream buffer; output goes to both (a missing USB host just drops bytes).
#include <string.h>

#include "driver/uart.h"
#include "driver/usb_serial_jtag.h"
#include "freertos/FreeRTOS.h"
#include "freertos/stream_buffer.h"
#include "freertos/task.h"

#include "port.h"

#define CONSOLE_UART UART_NUM_0
static StreamBufferHandle_t s_in;

static void usb_reader(void *arg) {
    (void)arg;
    uint8_t buf[64];
    for (;;) {
        int n = usb_serial_jtag_read_bytes(buf, sizeof buf, portMAX_DELAY);
        if (n > 0) xStreamBufferSend(s_in, buf, (size_t)n, portMAX_DELAY);
    }
}

static void uart_reader(void *arg) {
    (void)arg;
    uint8_t buf[64];
    for (;;) {
        int n = uart_read_bytes(CONSOLE_UART, buf, sizeof buf, portMAX_DELAY);
        if (n > 0) xStreamBufferSend(s_in, buf, (size_t)n, portMAX_DELAY);
    }
}

esp_err_t pg_port_console_init(void) {
    s_in = xStreamBufferCreate(1024, 1);
    if (!s_in) return ESP_ERR_NO_MEM;
    usb_serial_jtag_driver_config_t usb = USB_SERIAL_JTAG_DRIVER_CONFIG_DEFAULT();
    esp_err_t err = usb_serial_jtag_driver_install(&usb);
    if (err != ESP_OK) return err;
    uart_config_t cfg = {
        .baud_rate = 115200,
        .data_bits = UART_DATA_8_BITS,
        .parity = UART_PARITY_DISABLE,
        .stop_bits = UART_STOP_BITS_1,
        .flow_ctrl = UART_HW_FLOWCTRL_DISABLE,
        .source_clk = UART_SCLK_DEFAULT,
    };
    err = uart_driver_install(CONSOLE_UART, 1024, 1024, 0, NULL, 0);
    if (err == ESP_OK) err = uart_param_config(CONSOLE_UART, &cfg);
    if (err != ESP_OK) return err;
    xTaskCreatePinnedToCore(usb_reader, "con_usb", 3072, NULL, 5, NULL, 0);
    xTaskCreatePinnedToCore(uart_reader, "con_uart", 3072, NULL, 5, NULL, 0);
    return ESP_OK;
}

int pg_port_console_getc(uint32_t timeout_ms) {
    uint8_t c;
    return xStreamBufferReceive(s_in, &c, 1, pdMS_TO_TICKS(timeout_ms)) == 1 ? c : -1;
}

void pg_port_console_out(void *ctx, const char *s, size_t n) {
    (void)ctx;
    // a streamed token is a few bytes: write through (LF -> CRLF for serial terminals)
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '\n') {
            if (i > start) {
                usb_serial_jtag_write_bytes(s + start, i - start, pdMS_TO_TICKS(20));
                uart_write_bytes(CONSOLE_UART, s + start, i - start);
            }
            if (i < n) {
                usb_serial_jtag_write_bytes("\r\n", 2, pdMS_TO_TICKS(20));
                uart_write_bytes(CONSOLE_UART, "\r\n", 2);
            }
            start = i + 1;
        }
    }
}
