package io.camundarelay.engine;

import org.camunda.bpm.engine.rest.security.auth.ProcessEngineAuthenticationFilter;
import org.camunda.bpm.engine.rest.security.auth.impl.HttpBasicAuthenticationProvider;
import org.springframework.boot.autoconfigure.condition.ConditionalOnProperty;
import org.springframework.boot.web.servlet.FilterRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/**
 * HTTP Basic authentication on the engine REST API, as Camunda Run does it.
 *
 * <p>The REST API is open by default in Camunda 7; this registers the engine's own
 * authentication filter on {@code /engine-rest/*}. {@code GET /engine-rest/engine} (the list
 * of engines) carries no engine name and stays open, which makes it the readiness probe.
 * Async support is on because fetch-and-lock long polling needs it. Turn it off only for a
 * trusted network with {@code relay.rest.basic-auth=false} ({@link StartupCheck} warns: requests
 * without a user pass every authorization check).
 */
@Configuration
@ConditionalOnProperty(name = "relay.rest.basic-auth", havingValue = "true", matchIfMissing = true)
public class RestAuthentication {

  @Bean
  public FilterRegistrationBean<ProcessEngineAuthenticationFilter> restAuthenticationFilter() {
    FilterRegistrationBean<ProcessEngineAuthenticationFilter> registration =
        new FilterRegistrationBean<>(new ProcessEngineAuthenticationFilter());
    registration.setName("camunda-rest-auth");
    registration.addUrlPatterns("/engine-rest/*");
    registration.addInitParameter(
        ProcessEngineAuthenticationFilter.AUTHENTICATION_PROVIDER_PARAM,
        HttpBasicAuthenticationProvider.class.getName());
    registration.addInitParameter("rest-url-pattern-prefix", "/engine-rest");
    registration.setAsyncSupported(true);
    return registration;
  }
}
